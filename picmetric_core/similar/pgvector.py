"""The similarity index with its embeddings in Postgres, searched by pgvector, where the server has it.

The in-process index keeps a float32 matrix of every embedding: ~5 KB a photo in every process, and a
full scan for each "more like this". Here the embeddings live in ``signature_vectors`` as ``halfvec``
(the float16 values exactly as stored), with one HNSW index per classifier, and a process holds only
the 64-bit hashes. Near-duplicates are still found by hash in-process; their few candidates' embeddings
are read from the database to confirm them.

``signature_vectors`` is derived from ``signatures``: before each question the index copies the rows it
has not seen, and a signature replaced by the backfill takes its vector with it
(``ON DELETE CASCADE``). It is created at run time, not by a migration, because the extension may be
installed after the schema was upgraded; without the extension (or the right to create it) nothing is
created and the in-process index serves (:func:`pgvector_index`).
"""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np
from psycopg2.extras import execute_values
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import NotSupportedError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.similar.index import Neighbour, SimilarityIndex
from picmetric_core.similar.signature import EMBEDDING_DTYPE, embedding_vector

log = logging.getLogger(__name__)

# HNSW returns at most ef_search rows: keep it above every k asked for (History's filter asks for 48).
EF_SEARCH = 100
_LOCK_KEY = 0x5049_434D_5645_4354  # "PICMVECT": one process creates the extension and the table
_ANALYZE_AFTER = 1_000
_SAFE_MODEL = re.compile(r"[\w.\- ]{1,100}")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS signature_vectors (
    signature_id bigint PRIMARY KEY REFERENCES signatures (id) ON DELETE CASCADE,
    embedding_model varchar(100) NOT NULL,
    embedding halfvec NOT NULL
)
"""


def pgvector_index(engine: Engine, sessions: sessionmaker[Session]) -> PgVectorIndex | None:
    """A :class:`PgVectorIndex` when ``engine`` is Postgres with pgvector installed or installable, else ``None``."""
    if engine.dialect.name != "postgresql":
        return None
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            if not connection.scalar(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")):
                if not connection.scalar(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")):
                    return None
                connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            connection.execute(text(CREATE_TABLE))
    except (ProgrammingError, NotSupportedError) as error:  # no right to create it, or a pgvector without halfvec
        log.warning("pgvector is on the server but cannot be used; similar photos use the in-process index: %s", error)
        return None
    return PgVectorIndex(sessions)


class PgVectorIndex(SimilarityIndex):
    """Hashes in-process, embeddings in ``signature_vectors`` (see the module's docstring). Thread-safe."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self._pending: list[tuple[int, str, bytes]] = []
        self._indexed: set[tuple[str, int]] = set()

    def _nearest(self, position: int, md5: str, k: int) -> list[Neighbour] | None:
        with self._sessions.begin() as session:
            own = session.execute(
                text(
                    "SELECT v.signature_id, v.embedding_model, vector_dims(v.embedding) FROM signature_vectors v "
                    "JOIN signatures s ON s.id = v.signature_id JOIN analyses a ON a.id = s.analysis_id "
                    "WHERE a.md5 = :md5"
                ),
                {"md5": md5},
            ).first()
            if own is None:
                return None
            signature_id, model, dim = own
            session.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k + 1)}"))
            # The same expression and predicate as the partial HNSW index, and the photo's own vector as a
            # scalar subquery (a constant to the planner), so the index orders the rows.
            distance = (
                f"v.embedding::halfvec({int(dim)}) <=> "
                f"(SELECT embedding::halfvec({int(dim)}) FROM signature_vectors WHERE signature_id = :own)"
            )
            rows = session.execute(
                text(
                    f"SELECT a.md5, 1 - ({distance}) FROM signature_vectors v "
                    "JOIN signatures s ON s.id = v.signature_id JOIN analyses a ON a.id = s.analysis_id "
                    f"WHERE v.embedding_model = :model ORDER BY {distance} LIMIT :k"
                ),
                {"own": signature_id, "model": model, "k": k + 1},
            ).all()
        return [Neighbour(other, round(float(score), 4)) for other, score in rows if other != md5][:k]

    def _keep_embedding(
        self, position: int, row_id: int, md5: str, embedding: bytes, model: str, expected: int
    ) -> None:
        table_id = self._table_ids.setdefault(model, len(self._table_ids))
        self._table_of[position] = table_id
        self._pending.append((row_id, model, embedding))

    def _added_partition(self, session: Session) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            # Its own transaction: ``session`` may still be streaming signatures through a server-side cursor.
            with self._sessions.begin() as writer:
                connection = writer.connection()
                _insert_vectors(connection, pending)
                if len(pending) >= _ANALYZE_AFTER:  # the planner must know the table is large to use its index
                    connection.execute(text("ANALYZE signature_vectors"))
                sizes = {(model, len(embedding) // EMBEDDING_DTYPE.itemsize) for _, model, embedding in pending}
                for model, dim in sizes - self._indexed:
                    _ensure_hnsw_index(connection, model, dim)
                self._indexed |= sizes
        except BaseException:
            self._pending = pending + self._pending  # the next refresh tries them again
            raise

    def _candidate_scores(self, positions: np.ndarray, table_id: int, model: str, vector: np.ndarray) -> np.ndarray:
        md5s = [self._md5s[i] for i in positions]
        stored = self._stored_embeddings(md5s, model)
        return np.array(
            [float(stored[md5] @ vector) if md5 in stored and len(stored[md5]) == len(vector) else -1.0 for md5 in md5s]
        )

    def _own_embedding(self, position: int, md5: str, model: str) -> bytes:
        with self._sessions() as session:
            return session.execute(_EMBEDDINGS, {"md5s": [md5], "model": model}).one()[1]

    def _stored_embeddings(self, md5s: list[str], model: str) -> dict[str, np.ndarray]:
        with self._sessions() as session:
            rows = session.execute(_EMBEDDINGS, {"md5s": md5s, "model": model}).all()
        return {md5: embedding_vector(embedding) for md5, embedding in rows}


_EMBEDDINGS = text(
    "SELECT a.md5, s.embedding FROM signatures s JOIN analyses a ON a.id = s.analysis_id "
    "WHERE a.md5 IN :md5s AND s.embedding_model = :model"
).bindparams(bindparam("md5s", expanding=True))


def _insert_vectors(connection: Connection, rows: list[tuple[int, str, bytes]]) -> None:
    """Insert ``(signature id, model, float16 bytes)`` rows that are not there yet, 500 to a statement.

    Vectors travel as text with five significant digits, which gives back every float16 exactly (a
    binary COPY would be faster, but psycopg2 refuses it under the wait callback that bounds every
    database call: ``store.database.install_wait_limit``).
    """
    values = [(signature_id, model, _halfvec_text(embedding)) for signature_id, model, embedding in rows]
    with connection.connection.dbapi_connection.cursor() as cursor:
        execute_values(
            cursor,
            "INSERT INTO signature_vectors (signature_id, embedding_model, embedding) "
            "SELECT v.id, v.model, v.embedding::halfvec FROM (VALUES %s) AS v (id, model, embedding) "
            "JOIN signatures s ON s.id = v.id ON CONFLICT DO NOTHING",
            values,
            page_size=500,
        )


def _halfvec_text(embedding: bytes) -> str:
    return "[" + ",".join(map("{:.5g}".format, np.frombuffer(embedding, EMBEDDING_DTYPE).tolist())) + "]"


def _ensure_hnsw_index(connection: Connection, model: str, dim: int) -> None:
    """One HNSW index per classifier (and size): a column of several vector sizes cannot be indexed whole."""
    if not _SAFE_MODEL.fullmatch(model):
        log.warning("no vector index for the embedding model %r: unexpected characters in its name", model)
        return
    name = "ix_signature_vectors_hnsw_" + hashlib.sha256(f"{model}/{dim}".encode()).hexdigest()[:12]
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})  # one builder at a time
    connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
    connection.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {name} ON signature_vectors "
            f"USING hnsw ((embedding::halfvec({int(dim)})) halfvec_cosine_ops) "
            f"WHERE embedding_model = '{model}'"
        )
    )
