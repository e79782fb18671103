"""The in-process similarity index: every stored signature in numpy arrays, caught up from the database.

Before each question the index reads the signature rows added since it last looked (ids only grow), so
analyses stored by this process, another API worker or the backfill are all found; and the ``deletions``
written since, so photos deleted by any process are forgotten without a restart.

Near-duplicates are decided in two steps, both measured on 21 photos (skimage's and darknet's) and six
edits of each (docs/similar.md): the pHash finds candidates within ``CANDIDATE_BITS`` (edits of one photo
were 0-20 bits apart, a 5 % crop the most; different photos 18 or more), and the embeddings confirm them
(edits of one photo: cosine similarity 0.67 or more with EfficientNet-Lite2, 0.78 with Lite0; different
photos within ``CANDIDATE_BITS``: 0.34 at most with Lite2, 0.38 with Lite0). Without an embedding to
compare, only hashes within ``HASH_ONLY_BITS`` count.

Where the Postgres server has pgvector, :class:`~picmetric_core.similar.pgvector.PgVectorIndex` keeps
the hashes here and the embeddings in the database instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.results import Signature
from picmetric_core.similar.phash import hamming, hamming_to_many
from picmetric_core.similar.signature import compact_embedding, embedding_vector
from picmetric_core.store.deletions import deleted_signatures_since, last_deletion_id
from picmetric_core.store.orm import AnalysisRow, SignatureRow

CANDIDATE_BITS = 22
CONFIRMING_SIMILARITY = 0.5  # midway between both classifiers' measured ranges
HASH_ONLY_BITS = 14
MAX_NEAR_DUPLICATES = 10
_INITIAL_CAPACITY = 1024
_LOAD_BATCH = 5_000


@dataclass(frozen=True)
class NearDuplicate:
    """A stored photo that is the same picture: ``distance`` bits of 64 differ in their pHashes."""

    md5: str
    distance: int


def near_duplicate_distance(a: Signature, b: Signature) -> int | None:
    """How many hash bits apart two photos are when they are the same picture by the index's rule, else ``None``.

    The rule of :meth:`SimilarityIndex.near_duplicates`, for two signatures that are not stored yet
    (the images of one batch block, written in one transaction).

    Example:
        >>> near_duplicate_distance(Signature(phash=0b1011), Signature(phash=0b0011))
        1
        >>> near_duplicate_distance(Signature(phash=0), Signature(phash=(1 << 20) - 1)) is None
        True
    """
    distance = hamming(a.phash, b.phash)
    if distance > CANDIDATE_BITS:
        return None
    comparable = (
        a.embedding is not None
        and b.embedding is not None
        and a.embedding_model == b.embedding_model
        and len(a.embedding) == len(b.embedding)
    )
    if not comparable:
        return distance if distance <= HASH_ONLY_BITS else None
    assert a.embedding is not None and b.embedding is not None
    similarity = float(embedding_vector(a.embedding) @ embedding_vector(b.embedding))
    return distance if similarity >= CONFIRMING_SIMILARITY else None


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

    def add(self, md5: str, vector: np.ndarray) -> int:
        if md5 in self.row_of:
            self.matrix[self.row_of[md5]] = vector
            return self.row_of[md5]
        if len(self.md5s) == len(self.matrix):
            extra = np.zeros((_grown(len(self.matrix)) - len(self.matrix), self.matrix.shape[1]), np.float32)
            self.matrix = np.concatenate([self.matrix, extra])
        self.row_of[md5] = len(self.md5s)
        self.matrix[len(self.md5s)] = vector
        self.md5s.append(md5)
        return self.row_of[md5]

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return self.matrix[: len(self.md5s)] @ vector

    def remove(self, md5: str) -> tuple[str, int] | None:
        """Drop ``md5``'s row; the last row moves into its place: returns that row's md5 and new row, if any."""
        row = self.row_of.pop(md5)
        last = len(self.md5s) - 1
        moved = None
        if row != last:
            moved = self.md5s[last]
            self.matrix[row] = self.matrix[last]
            self.md5s[row] = moved
            self.row_of[moved] = row
        self.md5s.pop()
        self.matrix[last] = 0
        return (moved, row) if moved is not None else None


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
        self._last_deletion_id: int | None = None  # None: before the first load
        self._md5s: list[str] = []
        self._row_of: dict[str, int] = {}
        self._hashes = np.zeros(_INITIAL_CAPACITY, np.int64)
        self._signature_ids = np.zeros(_INITIAL_CAPACITY, np.int64)
        # Per photo: which embedding table holds it (-1: none) and its row there.
        self._table_of = np.full(_INITIAL_CAPACITY, -1, np.int16)
        self._table_row = np.zeros(_INITIAL_CAPACITY, np.int64)
        self._tables: list[_Embeddings] = []
        self._table_ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._md5s)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (not counting the md5 strings)."""
        per_photo = self._hashes.nbytes + self._table_of.nbytes + self._table_row.nbytes + self._signature_ids.nbytes
        return per_photo + sum(table.matrix.nbytes for table in self._tables)

    def refresh(self) -> int:
        """Read the signatures stored since the last call, a few thousand rows at a time, and forget the
        deleted ones; returns how many were added."""
        added = 0
        with self._lock, self._sessions() as session:
            if self._last_deletion_id is None:  # before the signatures: a later deletion is read next time
                self._last_deletion_id = last_deletion_id(session)
            statement = self._new_rows().where(SignatureRow.id > self._last_id).order_by(SignatureRow.id)
            statement = statement.execution_options(yield_per=_LOAD_BATCH)
            # The first load sizes every array once, for all the rows (no copies while growing).
            expected = (session.scalar(select(func.count(SignatureRow.id))) or 0) if not self._md5s else 0
            for rows in session.execute(statement).partitions():
                self._reserve(len(self._md5s) + max(len(rows), expected))
                for row_id, md5, phash, embedding, model in rows:
                    self._add(row_id, md5, phash, embedding, model, expected=max(len(rows), expected))
                    self._last_id = max(self._last_id, row_id)
                self._added_partition(session, last=False)
                added += len(rows)
            self._added_partition(session, last=True)
            self._forget_deleted(session)
        return added

    def _forget_deleted(self, session: Session) -> None:
        """Drop the photos whose signatures were deleted since the last call (under the lock)."""
        assert self._last_deletion_id is not None
        deleted = deleted_signatures_since(session, self._last_deletion_id)
        if not deleted:
            return
        self._last_deletion_id = deleted[-1][0]
        gone = np.array([signature_id for _, signature_id in deleted if signature_id is not None], np.int64)
        positions = np.flatnonzero(np.isin(self._signature_ids[: len(self._md5s)], gone))
        for position in sorted(positions.tolist(), reverse=True):  # from the end: no moved photo is one to drop
            self._remove_at(position)

    def _remove_at(self, position: int) -> None:
        """Forget the photo at ``position``; the last photo moves into its place."""
        md5 = self._md5s[position]
        if self._table_of[position] >= 0:
            self._drop_embedding(int(self._table_of[position]), md5)
        last = len(self._md5s) - 1
        if position != last:
            moved = self._md5s[last]
            self._md5s[position] = moved
            self._row_of[moved] = position
            for array in (self._hashes, self._table_of, self._table_row, self._signature_ids):
                array[position] = array[last]
        self._md5s.pop()
        del self._row_of[md5]
        self._table_of[last] = -1

    def _drop_embedding(self, table_id: int, md5: str) -> None:
        moved = self._tables[table_id].remove(md5)
        if moved is not None:
            moved_md5, row = moved
            self._table_row[self._row_of[moved_md5]] = row

    def _new_rows(self) -> Select:
        """Signature id, md5, hash, embedding and its model, for :meth:`refresh` to filter and stream."""
        return (
            select(SignatureRow.id, AnalysisRow.md5, SignatureRow.phash, SignatureRow.embedding)
            .add_columns(SignatureRow.embedding_model)
            .join(AnalysisRow, AnalysisRow.id == SignatureRow.analysis_id)
        )

    def near_duplicates(
        self, phash: int, embedding: bytes | None = None, model: str | None = None, *, exclude: str | None = None
    ) -> list[NearDuplicate]:
        """Stored photos that are the same picture as one with this hash (and embedding), closest first."""
        self.refresh()
        vector = embedding_vector(embedding) if embedding is not None else None
        with self._lock:
            count = len(self._md5s)
            distances = hamming_to_many(phash, self._hashes[:count])
            candidates = np.flatnonzero(distances <= CANDIDATE_BITS)
            confirmed = distances[candidates] <= HASH_ONLY_BITS
            table_id = self._table_ids.get(model) if model is not None and vector is not None else None
            if table_id is not None and len(candidates):
                comparable = self._table_of[candidates] == table_id
                scores = self._candidate_scores(candidates[comparable], table_id, model, vector)
                confirmed[comparable] = scores >= CONFIRMING_SIMILARITY
            found = [
                NearDuplicate(self._md5s[i], int(distances[i]))
                for i in candidates[confirmed]
                if self._md5s[i] != exclude
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
            table_id = int(self._table_of[position])
            if table_id < 0:
                return self._unlocked_near_duplicates(phash, md5)
            model = next(name for name, i in self._table_ids.items() if i == table_id)
            embedding = self._own_embedding(position, md5, model)
        if embedding is None:  # deleted since the refresh
            return None
        return self.near_duplicates(phash, embedding, model, exclude=md5)

    def _candidate_scores(self, positions: np.ndarray, table_id: int, model: str, vector: np.ndarray) -> np.ndarray:
        """Cosine similarities of ``vector`` to the embeddings of the photos at ``positions`` (all of ``model``)."""
        return self._tables[table_id].matrix[self._table_row[positions]] @ vector

    def _own_embedding(self, position: int, md5: str, model: str) -> bytes | None:
        return compact_embedding(self._tables[int(self._table_of[position])].matrix[self._table_row[position]])

    def _added_partition(self, session: Session, last: bool) -> None:
        """Called after each partition of rows :meth:`refresh` read, and once more at its end (under the lock)."""

    def _unlocked_near_duplicates(self, phash: int, exclude: str) -> list[NearDuplicate]:
        distances = hamming_to_many(phash, self._hashes[: len(self._md5s)])
        found = [
            NearDuplicate(self._md5s[i], int(distances[i]))
            for i in np.flatnonzero(distances <= HASH_ONLY_BITS)
            if self._md5s[i] != exclude
        ]
        return sorted(found, key=lambda d: (d.distance, d.md5))[:MAX_NEAR_DUPLICATES]

    def similar(self, md5: str, k: int = 12) -> list[Neighbour] | None:
        """The ``k`` stored photos whose embeddings are closest to ``md5``'s, most similar first.

        Returns ``None`` when ``md5`` has no embedding yet (never analysed, or analysed before this
        feature and not backfilled).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        self.refresh()
        with self._lock:
            position = self._row_of.get(md5)
            if position is None or self._table_of[position] < 0:
                return None
            return self._nearest(position, md5, k)

    def _nearest(self, position: int, md5: str, k: int) -> list[Neighbour] | None:
        """The ``k`` nearest embeddings to the one of the photo at ``position`` (under the lock)."""
        table = self._tables[int(self._table_of[position])]
        own = int(self._table_row[position])
        scores = table.scores(table.matrix[own])
        scores[own] = -np.inf
        best = _top(scores, k)
        return [Neighbour(table.md5s[i], round(float(scores[i]), 4)) for i in best if np.isfinite(scores[i])]

    def _reserve(self, rows: int) -> None:
        if rows > len(self._hashes):
            size = max(rows, _grown(len(self._hashes)))
            self._hashes = np.resize(self._hashes, size)
            self._signature_ids = np.resize(self._signature_ids, size)
            self._table_of = np.concatenate([self._table_of, np.full(size - len(self._table_of), -1, np.int16)])
            self._table_row = np.resize(self._table_row, size)

    def _add(
        self, row_id: int, md5: str, phash: int, embedding: bytes | None, model: str | None, expected: int
    ) -> None:
        position = self._row_of.get(md5)
        if position is None:
            position = len(self._md5s)
            self._row_of[md5] = position
            self._md5s.append(md5)
        self._hashes[position] = phash
        self._signature_ids[position] = row_id
        if model is not None:
            self._keep_embedding(position, row_id, md5, embedding, model, expected)

    def _keep_embedding(
        self, position: int, row_id: int, md5: str, embedding: bytes | None, model: str, expected: int
    ) -> None:
        if embedding is None:
            return
        vector = embedding_vector(embedding)
        table_id = self._table_ids.get(model)
        if table_id is None:
            table_id = self._table_ids[model] = len(self._tables)
            self._tables.append(_Embeddings(len(vector), expected))
        table = self._tables[table_id]
        if table.matrix.shape[1] == len(vector):
            self._table_row[position] = table.add(md5, vector)
            self._table_of[position] = table_id


def _grown(size: int) -> int:
    """The next capacity: a quarter more (doubling would leave up to half of a large matrix unused)."""
    return size + max(size // 4, _INITIAL_CAPACITY)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, highest first (ties by position)."""
    if len(scores) <= k:
        return np.argsort(-scores, kind="stable")
    best = np.argpartition(-scores, k)[:k]
    return best[np.argsort(-scores[best], kind="stable")]
