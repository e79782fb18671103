"""A fit's photos in its reduced space, held in memory to find a new photo's nearest placed photos.

A finished fit keeps its projection and its photos' reduced vectors (64 float16 numbers each: 12.8 MB at
100,000 photos) in its row. A process loads them once per fit; before each question it adds the photos
placed since (by any process: their points are read by id, ids only grow), and it forgets photos that
turn out to be deleted when their points are looked up. A new fit is a new space: nothing carries over.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.map import records
from picmetric_core.map.projection import Projection


@dataclass(frozen=True)
class SpaceArrays:
    """What a finished fit keeps for placing: its photos' analysis ids, their reduced vectors, the projection,
    and the newest signature it read (photos waiting for a place have newer ones)."""

    analysis_ids: np.ndarray
    reduced: np.ndarray
    projection: Projection
    last_signature_id: int

    def pack(self) -> bytes:
        return records.pack(
            ids=self.analysis_ids,
            reduced=self.reduced.astype(np.float16),
            mean=self.projection.mean,
            components=self.projection.components,
            last_signature_id=np.array(self.last_signature_id, np.int64),
        )

    @classmethod
    def unpack(cls, blob: bytes) -> SpaceArrays:
        arrays = records.unpack(blob)
        projection = Projection(arrays["mean"], arrays["components"])
        return cls(arrays["ids"], arrays["reduced"], projection, int(arrays["last_signature_id"]))


class FitSpace:
    """The placed photos of one fit in its reduced space: ``nearest`` answers from memory. Thread-safe."""

    def __init__(self, fit: records.MapFit, arrays: SpaceArrays) -> None:
        self.fit = fit
        self.projection = arrays.projection
        self.last_signature_id = arrays.last_signature_id
        self._lock = threading.Lock()
        self._catching_up = threading.Lock()
        self._size = 0
        self._ids = np.zeros(0, np.int64)
        self._reduced = np.zeros((0, arrays.projection.dims), np.float32)
        self._half_norms = np.zeros(0, np.float32)
        self._alive = np.zeros(0, bool)
        self._last_point_id = 0  # the newest map point read (any fit's: ids only grow)
        self._append(np.asarray(arrays.analysis_ids, np.int64), np.asarray(arrays.reduced, np.float32))

    def __len__(self) -> int:
        return int(self._alive[: self._size].sum())

    def nearest(self, vector: np.ndarray, count: int) -> np.ndarray:
        """The analysis ids of the ``count`` photos nearest to ``vector`` (a full embedding), nearest first."""
        reduced = self.projection.project(vector[None, :])[0]
        with self._lock:
            size = self._size
            # Ranking by x·y − |y|²/2 is ranking by Euclidean distance to x.
            scores = self._reduced[:size] @ reduced - self._half_norms[:size]
            scores[~self._alive[:size]] = -np.inf
            count = min(count, int(self._alive[:size].sum()))
            if count <= 0:
                return np.zeros(0, np.int64)
            best = np.argpartition(scores, size - count)[size - count :]
            return self._ids[best[np.argsort(-scores[best], kind="stable")]]

    def catch_up(self, sessions: sessionmaker[Session]) -> None:
        """Add the photos placed on the fit since the last look (by this process or another)."""
        with self._catching_up:  # one at a time: two threads would both add the same photos
            with sessions() as session:
                placed = records.placed_since(session, self.fit, self._last_point_id)
            reduced = self.projection.project(placed.vectors)
            with self._lock:
                self._append(placed.analysis_ids, reduced)
                self._last_point_id = placed.last_point_id

    def forget(self, analysis_ids: Iterable[int]) -> None:
        """Leave out photos found deleted."""
        with self._lock:
            gone = np.isin(self._ids[: self._size], np.fromiter(analysis_ids, np.int64))
            self._alive[: self._size][gone] = False

    def _append(self, analysis_ids: np.ndarray, reduced: np.ndarray) -> None:
        size = self._size + len(analysis_ids)
        if size > len(self._ids):  # grown by half again: a photo placed at a time copies nothing most times
            capacity = max(size, len(self._ids) * 3 // 2, 1024)
            self._ids = np.resize(self._ids, capacity)
            self._reduced = np.resize(self._reduced, (capacity, self._reduced.shape[1]))
            self._half_norms = np.resize(self._half_norms, capacity)
            self._alive = np.resize(self._alive, capacity)
        self._ids[self._size : size] = analysis_ids
        self._reduced[self._size : size] = reduced
        self._half_norms[self._size : size] = 0.5 * np.einsum("ij,ij->i", reduced, reduced)
        self._alive[self._size : size] = True
        self._size = size


_spaces: weakref.WeakKeyDictionary[sessionmaker[Session], FitSpace] = weakref.WeakKeyDictionary()
_spaces_lock = threading.Lock()


def space_of(sessions: sessionmaker[Session], fit: records.MapFit) -> FitSpace | None:
    """The fit's space, loaded on the first question of this process about this fit and kept for the next;
    ``None`` for a fit that kept none (fitted before the map kept its space)."""
    with _spaces_lock:
        cached = _spaces.get(sessions)
        if cached is not None and cached.fit.id == fit.id:
            return cached
        with sessions() as session:
            blob = records.fit_space(session, fit.id)
        if blob is None:
            return None
        space = FitSpace(fit, SpaceArrays.unpack(blob))
        space.catch_up(sessions)  # the photos placed since the fit: not in its blob
        _spaces[sessions] = space
        return space
