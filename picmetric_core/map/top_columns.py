"""Each row's best columns of a score matrix in one pass, compiled by numba (imported only when a fit runs).

A partial sort of every row (``np.argpartition``) cost several times the matrix product that made the
scores; here most scores fail a single comparison with the weakest score kept so far.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def top_columns(scores: np.ndarray, count: int, first_row: int) -> np.ndarray:
    """The ``count`` highest-scoring columns of each row of ``scores`` (rows, width), unordered, leaving out
    each row's own column (``first_row`` + row: the rows are a chunk of the same photos as the columns).

    Example:
        >>> sorted(top_columns(np.array([[5.0, 1.0, 3.0, 2.0]], np.float32), 2, 0)[0].tolist())
        [2, 3]
    """
    rows, width = scores.shape
    found = np.empty((rows, count), np.int32)
    for row in numba.prange(rows):
        best = np.full(count, -np.inf, np.float32)
        where = np.full(count, -1, np.int32)
        weakest, threshold = 0, -np.inf
        for column in range(width):
            score = scores[row, column]
            if score > threshold and column != first_row + row:
                best[weakest], where[weakest] = score, column
                weakest = np.argmin(best)
                threshold = best[weakest]
        found[row] = where
    return found
