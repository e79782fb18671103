"""The map's reduced space: the embeddings projected on their main directions (PCA), as UMAP is usually fed.

Neighbours are searched there (64 numbers a photo instead of 1,280: 20 times fewer products) and then
ranked by the exact cosine similarity of the full embeddings. The projection is kept with the fit, so a
photo stored later is projected the same way when it is placed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REDUCED_DIMS = 64
PCA_SAMPLE = 10_000  # the directions are found on this many photos (more change them little, and cost more)
_PROJECT_CHUNK = 10_000


@dataclass(frozen=True)
class Projection:
    """``mean`` (d,) and ``components`` (dims, d): the reduced space's origin and orthonormal directions."""

    mean: np.ndarray
    components: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` (n, d) in the reduced space (n, dims), float32.

        Example:
            >>> p = Projection(np.zeros(3, np.float32), np.eye(3, dtype=np.float32)[:2])
            >>> p.project(np.array([[1.0, 2.0, 3.0]], np.float32)).tolist()
            [[1.0, 2.0]]
        """
        reduced = np.empty((len(vectors), self.dims), np.float32)
        for start in range(0, len(vectors), _PROJECT_CHUNK):
            chunk = np.asarray(vectors[start : start + _PROJECT_CHUNK], np.float32)
            reduced[start : start + len(chunk)] = (chunk - self.mean) @ self.components.T
        return reduced


def fit_projection(vectors: np.ndarray, dims: int = REDUCED_DIMS) -> Projection:
    """The ``dims`` main directions of ``vectors`` (n, d) by PCA: the eigenvectors of the covariance of a
    sample of at most ``PCA_SAMPLE`` rows (the same sample for the same rows: reproducible).

    Example:
        >>> fit_projection(np.random.default_rng(0).standard_normal((100, 8)), dims=3).components.shape
        (3, 8)
    """
    dims = min(dims, vectors.shape[1])
    rows = np.arange(len(vectors))
    if len(rows) > PCA_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(len(rows), PCA_SAMPLE, replace=False))
    centred = np.asarray(vectors[rows], np.float32)
    mean = centred.mean(axis=0, dtype=np.float64) if len(centred) else np.zeros(vectors.shape[1])
    centred -= mean.astype(np.float32)
    _, eigenvectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))  # ascending eigenvalues
    components = eigenvectors[:, ::-1][:, :dims].T
    return Projection(mean.astype(np.float32), np.ascontiguousarray(components, np.float32))
