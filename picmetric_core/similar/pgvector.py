"""The similarity index with its embeddings in Postgres, searched by pgvector, where the server has it.

The in-process index keeps a float32 matrix of every embedding: ~5 KB a photo in every process, and a
full scan for each "more like this". Here the embeddings live in ``signature_vectors`` as ``halfvec``
(the float16 values exactly as stored), with one HNSW index per classifier, and a process holds only
the 64-bit hashes and each photo's signature id. Near-duplicates are still found by hash in-process; the
server computes their candidates' similarities to confirm them.

``signature_vectors`` is derived from ``signatures``: before each question the index copies the rows it
has not seen, and a signature replaced by the backfill or deleted with its analysis takes its vector with
it (``ON DELETE CASCADE``). It is created at run time, not by a migration, because the extension may be
installed after the schema was upgraded; without the extension (or the right to create it) nothing is
created and the in-process index serves (:func:`pgvector_index`).
"""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np
from psycopg2.extras import execute_values
from sqlalchemy import Connection, Engine, Select, TextClause, bindparam, case, column, select, table, text
from sqlalchemy.exc import NotSupportedError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.similar.index import Neighbour, SimilarityIndex
from picmetric_core.similar.signature import EMBEDDING_DTYPE
from picmetric_core.store.database import long_database_waits
from picmetric_core.store.orm import AnalysisRow, SignatureRow

log = logging.getLogger(__name__)

# HNSW returns at most ef_search rows: keep it above every k asked for (History's filter asks for 48).
EF_SEARCH = 100
_LOCK_KEY = 0x5049_434D_5645_4354  # "PICMVECT": one process creates the extension and the table
# An HNSW index over this many embeddings is built inside the request that first needs it (seconds);
# a larger one by ``picmetric similar backfill`` (minutes), with the searches scanning every row until then.
INLINE_INDEX_MAX = 5_000
INLINE_INDEX_LIMIT_S = 120.0
_SAFE_MODEL = re.compile(r"[\w.\- ]{1,100}")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS signature_vectors (
    signature_id bigint PRIMARY KEY REFERENCES signatures (id) ON DELETE CASCADE,
    embedding_model varchar(100) NOT NULL,
    embedding halfvec NOT NULL
)
"""

_STORAGE = (
    "SELECT attstorage FROM pg_attribute WHERE attrelid = 'signature_vectors'::regclass AND attname = 'embedding'"
)


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
            if connection.scalar(text(_STORAGE)) != "p":
                # Kept in the row (a 1280-d halfvec is 2.5 KB, over the 2 KB at which Postgres moves a value
                # out to TOAST): at 100,000 photos confirming ~900 near-duplicate candidates took 9 ms
                # instead of 19, and the HNSW build 28 s instead of 54.
                connection.execute(text("ALTER TABLE signature_vectors ALTER COLUMN embedding SET STORAGE PLAIN"))
    except (ProgrammingError, NotSupportedError) as error:  # no right to create it, or a pgvector without halfvec
        log.warning("pgvector is on the server but cannot be used; similar photos use the in-process index: %s", error)
        return None
    return PgVectorIndex(sessions)


class PgVectorIndex(SimilarityIndex):
    """Hashes in-process, embeddings in ``signature_vectors`` (see the module's docstring). Thread-safe."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        super().__init__(sessions)
        self._pending: list[tuple[int, str, bytes]] = []
        self._sizes: set[tuple[str, int]] = set()  # (classifier, dimension) pairs copied
        self._indexed: set[tuple[str, int]] = set()  # built, or too large to build inline (said once)

    def _nearest(self, position: int, md5: str, k: int) -> list[Neighbour] | None:
        signature_id = int(self._table_row[position])
        with self._sessions.begin() as session:
            own = session.execute(
                text("SELECT embedding_model, vector_dims(embedding) FROM signature_vectors WHERE signature_id = :id"),
                {"id": signature_id},
            ).first()
            if own is None:  # its copy failed; the next refresh tries again
                return None
            model, dim = own
            session.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k + 1)}"))
            rows = session.execute(nearest_query(dim), {"own": signature_id, "model": model, "k": k + 1}).all()
        return [Neighbour(other, round(float(score), 4)) for other, score in rows if other != md5][:k]

    def _new_rows(self) -> Select:
        # The embedding only where it is not copied yet: a process starting on a large database reads
        # the hashes and which photos have an embedding, not every embedding again.
        copied = table("signature_vectors", column("signature_id"))
        return (
            select(SignatureRow.id, AnalysisRow.md5, SignatureRow.phash)
            .add_columns(case((copied.c.signature_id.is_(None), SignatureRow.embedding), else_=None))
            .add_columns(SignatureRow.embedding_model)
            .join(AnalysisRow, AnalysisRow.id == SignatureRow.analysis_id)
            .outerjoin(copied, copied.c.signature_id == SignatureRow.id)
        )

    def _keep_embedding(
        self, position: int, row_id: int, md5: str, embedding: bytes | None, model: str, expected: int
    ) -> None:
        self._table_of[position] = self._table_ids.setdefault(model, len(self._table_ids))
        self._table_row[position] = row_id  # here: where the vector is, its signature id
        if embedding is not None:
            self._pending.append((row_id, model, embedding))

    def _added_partition(self, session: Session, last: bool) -> None:
        if not self._pending and not (last and self._sizes - self._indexed):
            return
        pending, self._pending = self._pending, []
        try:
            # Its own transaction: ``session`` may still be streaming signatures through a server-side cursor.
            with self._sessions.begin() as writer:
                connection = writer.connection()
                if pending:
                    _insert_vectors(connection, pending)
                    self._sizes |= {(model, len(vector) // EMBEDDING_DTYPE.itemsize) for _, model, vector in pending}
                if last:  # built once the rows are in: filling an HNSW index row by row is much slower
                    self._index_small_tables(connection)
        except BaseException:
            self._pending = pending + self._pending  # the next refresh tries them again
            raise

    def _index_small_tables(self, connection: Connection) -> None:
        """Build the missing HNSW indexes that take seconds; leave larger ones to :meth:`build_indexes`."""
        for model, dim in sorted(self._sizes - self._indexed):
            if not _index_exists(connection, model, dim):
                rows = connection.scalar(
                    text("SELECT count(*) FROM signature_vectors WHERE embedding_model = :model"), {"model": model}
                )
                if rows > INLINE_INDEX_MAX:
                    log.warning(
                        "%d embeddings of %s have no vector index yet, so 'more like this' scans them all; "
                        "build it once with: picmetric similar backfill",
                        rows,
                        model,
                    )
                    self._indexed.add((model, dim))  # said once per process
                    continue
                with long_database_waits(connection, INLINE_INDEX_LIMIT_S):
                    connection.execute(text("ANALYZE signature_vectors"))
                    _create_hnsw_index(connection, model, dim)
            self._indexed.add((model, dim))

    def build_indexes(self, limit_s: float = 3600.0) -> list[tuple[str, int]]:
        """Copy every embedding not copied yet and build every missing HNSW index, however many rows.

        For ``picmetric similar backfill`` (an administrator's command, never a request): on 100,000
        photos this takes minutes. Returns the (classifier, dimension) pairs it built an index for.
        """
        self.refresh()
        built = []
        with self._lock, self._sessions.begin() as session:
            connection = session.connection()
            with long_database_waits(connection, limit_s):
                sizes = connection.execute(
                    text("SELECT DISTINCT embedding_model, vector_dims(embedding) FROM signature_vectors")
                ).all()
                for model, dim in sizes:
                    if not _index_exists(connection, model, dim):
                        connection.execute(text("ANALYZE signature_vectors"))
                        _create_hnsw_index(connection, model, dim)
                        built.append((model, dim))
                    self._indexed.add((model, dim))
        return built

    def _candidate_scores(self, positions: np.ndarray, table_id: int, model: str, vector: np.ndarray) -> np.ndarray:
        # Computed by the server: random hashes leave ~0.9 % of all photos within CANDIDATE_BITS, and
        # fetching their embeddings (2.5 KB each) cost ~100 ms at 100,000 photos.
        signature_ids = self._table_row[positions].tolist()
        query = text(
            "SELECT signature_id, 1 - (embedding <=> CAST(:vector AS halfvec)) FROM signature_vectors "
            "WHERE signature_id IN :ids AND embedding_model = :model"
        ).bindparams(bindparam("ids", expanding=True))
        parameters = {"vector": _vector_text(vector), "ids": signature_ids, "model": model}
        with self._sessions() as session:
            found = dict(session.execute(query, parameters).tuples().all())
        return np.array([found.get(signature_id, -1.0) for signature_id in signature_ids], np.float64)

    def _own_embedding(self, position: int, md5: str, model: str) -> bytes | None:
        with self._sessions() as session:
            row = session.get(SignatureRow, int(self._table_row[position]))
        return row.embedding if row is not None else None  # None: deleted since the last refresh

    def _drop_embedding(self, table_id: int, md5: str) -> None:
        pass  # its vector went with its signature (ON DELETE CASCADE)


def nearest_query(dim: int) -> TextClause:
    """The ``k`` rows nearest to signature ``own``'s vector among ``model``'s, with their similarity.

    The same expression and predicate as the partial HNSW index, and the photo's own vector as a scalar
    subquery (a constant to the planner), so the index can order the rows.
    """
    distance = (
        f"v.embedding::halfvec({int(dim)}) <=> "
        f"(SELECT embedding::halfvec({int(dim)}) FROM signature_vectors WHERE signature_id = :own)"
    )
    return text(
        f"SELECT a.md5, 1 - ({distance}) FROM signature_vectors v "
        "JOIN signatures s ON s.id = v.signature_id JOIN analyses a ON a.id = s.analysis_id "
        f"WHERE v.embedding_model = :model ORDER BY {distance} LIMIT :k"
    )


def _insert_vectors(connection: Connection, rows: list[tuple[int, str, bytes]]) -> None:
    """Insert ``(signature id, model, float16 bytes)`` rows that are not there yet (nor their signatures
    deleted), 500 to a statement.

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
            # Locked against a delete that commits meanwhile: a signature deleted since is skipped, not a failure.
            "JOIN signatures s ON s.id = v.id FOR KEY SHARE OF s ON CONFLICT DO NOTHING",
            values,
            page_size=500,
        )


def _halfvec_text(embedding: bytes) -> str:
    return _vector_text(np.frombuffer(embedding, EMBEDDING_DTYPE))


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(map("{:.5g}".format, vector.tolist())) + "]"


def _index_name(model: str, dim: int) -> str:
    return "ix_signature_vectors_hnsw_" + hashlib.sha256(f"{model}/{dim}".encode()).hexdigest()[:12]


def _index_exists(connection: Connection, model: str, dim: int) -> bool:
    found = connection.scalar(text("SELECT 1 FROM pg_class WHERE relname = :name"), {"name": _index_name(model, dim)})
    return bool(found)


def _create_hnsw_index(connection: Connection, model: str, dim: int) -> None:
    """One HNSW index per classifier (and size): a column of several vector sizes cannot be indexed whole."""
    if not _SAFE_MODEL.fullmatch(model):
        log.warning("no vector index for the embedding model %r: unexpected characters in its name", model)
        return
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})  # one builder at a time
    connection.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
    connection.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {_index_name(model, dim)} ON signature_vectors "
            f"USING hnsw ((embedding::halfvec({int(dim)})) halfvec_cosine_ops) "
            f"WHERE embedding_model = '{model}'"
        )
    )
