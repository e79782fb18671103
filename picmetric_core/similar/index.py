"""The in-process similarity index: every stored signature in numpy arrays, caught up from the database.

Before each question the index reads the signature rows added since it last looked (ids only grow), so
analyses stored by this process, another API worker or the backfill are all found.

Near-duplicates are decided in two steps, both measured on 21 photos (skimage's and darknet's) and six
edits of each (docs/similar.md): the pHash finds candidates within ``CANDIDATE_BITS`` (edits of one photo
were 0-20 bits apart, a 5 % crop the most; different photos 18 or more), and the embeddings confirm them
(edits of one photo: cosine similarity 0.78 or more; different photos: 0.56 at most). Without an embedding
to compare, only hashes within ``HASH_ONLY_BITS`` count.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.similar.phash import hamming_to_many
from picmetric_core.similar.signature import compact_embedding, embedding_vector
from picmetric_core.store.orm import AnalysisRow, SignatureRow

CANDIDATE_BITS = 22
CONFIRMING_SIMILARITY = 0.7
HASH_ONLY_BITS = 14
MAX_NEAR_DUPLICATES = 10
_INITIAL_CAPACITY = 1024


@dataclass(frozen=True)
class NearDuplicate:
    """A stored photo that is the same picture: ``distance`` bits of 64 differ in their pHashes."""

    md5: str
    distance: int


@dataclass(frozen=True)
class Neighbour:
    """A stored photo and its cosine similarity (-1 to 1; 1 is the same content) to the one asked about."""

    md5: str
    similarity: float


class _Embeddings:
    """One classifier's embeddings as rows of a float32 matrix (float32: numpy's float16 products are slow)."""

    def __init__(self, dim: int, capacity: int) -> None:
        self.matrix = np.zeros((max(capacity, _INITIAL_CAPACITY), dim), np.float32)
        self.md5s: list[str] = []
        self.row_of: dict[str, int] = {}

    def add(self, md5: str, vector: np.ndarray) -> None:
        if md5 in self.row_of:
            self.matrix[self.row_of[md5]] = vector
            return
        if len(self.md5s) == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.row_of[md5] = len(self.md5s)
        self.matrix[len(self.md5s)] = vector
        self.md5s.append(md5)

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return self.matrix[: len(self.md5s)] @ vector


class SimilarityIndex:
    """Hashes and embeddings of every stored analysis. Thread-safe.

    Example:
        >>> index = SimilarityIndex(session_factory(engine))
        >>> [n.md5 for n in index.similar("4f055f233ff79efdb5fdd377b2161c45", k=3)]
        ['9d1c...', '0b7e...', '77aa...']
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._lock = threading.Lock()
        self._last_id = 0
        self._md5s: list[str] = []
        self._row_of: dict[str, int] = {}
        self._hashes = np.zeros(_INITIAL_CAPACITY, np.int64)
        self._embeddings: dict[str, _Embeddings] = {}
        self._model_of: dict[str, str] = {}
        self._expected = 0  # rows the current refresh brings: the arrays are sized for them at once

    def __len__(self) -> int:
        return len(self._md5s)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (not counting the md5 strings)."""
        return self._hashes.nbytes + sum(e.matrix.nbytes for e in self._embeddings.values())

    def refresh(self) -> int:
        """Read the signatures stored since the last call; returns how many."""
        statement = (
            select(SignatureRow.id, AnalysisRow.md5, SignatureRow.phash, SignatureRow.embedding)
            .add_columns(SignatureRow.embedding_model)
            .join(AnalysisRow, AnalysisRow.id == SignatureRow.analysis_id)
            .order_by(SignatureRow.id)
        )
        with self._lock:
            with self._sessions() as session:
                rows = session.execute(statement.where(SignatureRow.id > self._last_id)).all()
            self._reserve(len(self._md5s) + len(rows))
            for row_id, md5, phash, embedding, model in rows:
                self._add(md5, phash, embedding, model)
                self._last_id = max(self._last_id, row_id)
            return len(rows)

    def reload_all(self) -> None:
        """Forget everything and read every signature again (after a backfill updated rows in place)."""
        with self._lock:
            self._last_id = 0
        self.refresh()

    def near_duplicates(
        self, phash: int, embedding: bytes | None = None, model: str | None = None, *, exclude: str | None = None
    ) -> list[NearDuplicate]:
        """Stored photos that are the same picture as one with this hash (and embedding), closest first."""
        self.refresh()
        with self._lock:
            count = len(self._md5s)
            distances = hamming_to_many(phash, self._hashes[:count])
            candidates = np.flatnonzero(distances <= CANDIDATE_BITS)
            vector = embedding_vector(embedding) if embedding is not None else None
            found = [
                NearDuplicate(self._md5s[i], int(distances[i]))
                for i in candidates
                if self._md5s[i] != exclude and self._confirmed(self._md5s[i], int(distances[i]), vector, model)
            ]
        return sorted(found, key=lambda d: (d.distance, d.md5))[:MAX_NEAR_DUPLICATES]

    def near_duplicates_of(self, md5: str) -> list[NearDuplicate] | None:
        """Near-duplicates of a stored photo; ``None`` when it has no signature yet."""
        self.refresh()
        with self._lock:
            position = self._row_of.get(md5)
            if position is None:
                return None
            phash = int(self._hashes[position])
            model = self._model_of.get(md5)
            embedding = self._embedding(md5)
        packed = compact_embedding(embedding) if embedding is not None else None
        return self.near_duplicates(phash, packed, model, exclude=md5)

    def similar(self, md5: str, k: int = 12) -> list[Neighbour] | None:
        """The ``k`` stored photos whose embeddings are closest to ``md5``'s, most similar first.

        Returns ``None`` when ``md5`` has no embedding yet (never analysed, or analysed before this
        feature and not backfilled).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        self.refresh()
        with self._lock:
            model = self._model_of.get(md5)
            if model is None:
                return None
            embeddings = self._embeddings[model]
            own = embeddings.row_of[md5]
            scores = embeddings.scores(embeddings.matrix[own])
            scores[own] = -np.inf
            best = _top(scores, k)
            return [Neighbour(embeddings.md5s[i], round(float(scores[i]), 4)) for i in best if np.isfinite(scores[i])]

    def _reserve(self, rows: int) -> None:
        self._expected = rows
        if rows > len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros(rows - len(self._hashes), np.int64)])

    def _add(self, md5: str, phash: int, embedding: bytes | None, model: str | None) -> None:
        position = self._row_of.get(md5)
        if position is None:
            position = len(self._md5s)
            if position == len(self._hashes):
                self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
            self._row_of[md5] = position
            self._md5s.append(md5)
        self._hashes[position] = phash
        if embedding is not None and model is not None:
            vector = embedding_vector(embedding)
            table = self._embeddings.get(model)
            if table is None:
                table = self._embeddings[model] = _Embeddings(len(vector), self._expected)
            if table.matrix.shape[1] == len(vector):
                table.add(md5, vector)
                self._model_of[md5] = model

    def _embedding(self, md5: str) -> np.ndarray | None:
        model = self._model_of.get(md5)
        if model is None:
            return None
        table = self._embeddings[model]
        return table.matrix[table.row_of[md5]]

    def _confirmed(self, md5: str, distance: int, vector: np.ndarray | None, model: str | None) -> bool:
        stored = self._embedding(md5)
        if vector is None or stored is None or model != self._model_of.get(md5):
            return distance <= HASH_ONLY_BITS
        return float(stored @ vector) >= CONFIRMING_SIMILARITY


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, highest first (ties by position)."""
    if len(scores) <= k:
        return np.argsort(-scores, kind="stable")
    best = np.argpartition(-scores, k)[:k]
    return best[np.argsort(-scores[best], kind="stable")]
