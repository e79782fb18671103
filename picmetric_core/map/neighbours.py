"""Each photo's nearest photos: candidates found in the reduced space, ranked by exact cosine similarity.

The search over all pairs runs on the reduced vectors (64 numbers each, :mod:`.projection`); each photo's
``CANDIDATES`` nearest there are then scored on the full embeddings, and the best ``k`` kept with their
exact similarities, so uniqueness is measured as before, on the full embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CANDIDATES = 45  # asked of the reduced space per photo: three times the neighbours kept
_CHUNK_ELEMENTS = 25_000_000  # reduced-space scores held at once (100 MB)
_RANK_CHUNK = 500  # rows whose candidates' full embeddings are gathered at once (115 MB at 45 × 1,280)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Neighbours:
    """Each photo's nearest other photos: ``indices`` (n, k) into the same rows, ``similarities`` (n, k)
    cosine similarities of the full embeddings, nearest first."""

    indices: np.ndarray
    similarities: np.ndarray


def nearest_neighbours(
    vectors: np.ndarray, reduced: np.ndarray, k: int, on_progress: Progress | None = None
) -> Neighbours:
    """The ``k`` most similar other rows of ``vectors`` (L2-normalised, float32) for every row, searched
    among the ``CANDIDATES`` nearest of each in ``reduced`` (the same rows projected, float32).

    Example:
        >>> v = np.eye(3, dtype=np.float32)
        >>> nearest_neighbours(v, v, 1).indices.shape
        (3, 1)
    """
    count = len(vectors)
    k = max(min(k, count - 1), 0)
    if k == 0:
        return Neighbours(np.zeros((count, 0), np.int32), np.zeros((count, 0), np.float32))
    candidates = reduced_candidates(reduced, min(max(CANDIDATES, k), count - 1), on_progress)
    return ranked(vectors, candidates, k)


def reduced_candidates(reduced: np.ndarray, count: int, on_progress: Progress | None = None) -> np.ndarray:
    """The ``count`` nearest other rows of every row of ``reduced`` by Euclidean distance, (n, count), unordered.

    Exact: every pair is scored, by one matrix product per chunk of rows; each row's best are then kept in
    one pass over its scores (:mod:`.top_columns`), as a sort of every row would cost more than the product.
    """
    rows = len(reduced)
    # Ranking by x·y − |y|²/2 is ranking by Euclidean distance (|x|² is the same for the whole row):
    # one product of [x, 1] by [y, −|y|²/2].
    half_norms = 0.5 * np.einsum("ij,ij->i", reduced, reduced)
    columns = np.hstack([reduced, -half_norms[:, None]]).astype(np.float32)
    queries = np.hstack([reduced, np.ones((rows, 1), np.float32)]).astype(np.float32)
    found = np.zeros((rows, count), np.int32)
    chunk = max(16, _CHUNK_ELEMENTS // max(rows, 1))
    from picmetric_core.map.top_columns import top_columns  # numba: compiled on the first fit, then cached

    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        found[start:stop] = top_columns(queries[start:stop] @ columns.T, count, start)
        if on_progress is not None:
            on_progress(stop, rows)
    return found


def ranked(vectors: np.ndarray, candidates: np.ndarray, k: int) -> Neighbours:
    """Of each row's ``candidates`` (indices into ``vectors``), the ``k`` most similar by exact cosine similarity."""
    indices = np.zeros((len(vectors), k), np.int32)
    similarities = np.zeros((len(vectors), k), np.float32)
    for start in range(0, len(vectors), _RANK_CHUNK):
        stop = min(start + _RANK_CHUNK, len(vectors))
        near = candidates[start:stop]
        scores = np.matmul(vectors[near], vectors[start:stop, :, None])[:, :, 0]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        indices[start:stop] = np.take_along_axis(near, order, axis=1)
        similarities[start:stop] = np.take_along_axis(scores, order, axis=1)
    return Neighbours(indices, similarities)
