"""From embeddings to a map: uniqueness, 2-D coordinates and clusters. Numbers only.

The neighbours (:mod:`.neighbours`) carry the exact cosine similarities of the full embeddings, so a
photo's uniqueness is its true distance to its nearest neighbours, and UMAP is handed that graph instead
of searching for one; its own uses of the data (laying out separate components) get the reduced vectors.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from picmetric_core.map.neighbours import Neighbours

NEIGHBOURS = 15  # UMAP's n_neighbors
UNIQUENESS_NEIGHBOURS = 5
UMAP_MIN_PHOTOS = 50  # below this a 2-D PCA is the map: UMAP's neighbourhoods need photos to spare
EXACT_CLUSTERS_MAX_PHOTOS = 5_000  # up to here clusters are found on the exact cosine distances
CLUSTER_SAMPLE = 20_000  # above that, on the map, on a sample of this many (HDBSCAN's cost grows fast)

Method = Literal["umap", "pca"]


@dataclass(frozen=True)
class Layout:
    """Map coordinates (n, 2), how they were made, each photo's cluster (-1: in none) and uniqueness."""

    xy: np.ndarray
    method: Method
    clusters: np.ndarray
    uniqueness: np.ndarray


def uniqueness_of(similarities: np.ndarray) -> np.ndarray:
    """Uniqueness from the similarities to the nearest neighbours: 1 − their mean over the nearest
    ``UNIQUENESS_NEIGHBOURS``, clipped to 0–1 (0: exact copies around it; 1: nothing alike).

    Example:
        >>> uniqueness_of(np.array([[1.0, 1.0], [0.2, 0.0]], np.float32)).round(2).tolist()
        [0.0, 0.9]
    """
    if similarities.shape[1] == 0:
        return np.ones(len(similarities), np.float32)
    nearest = similarities[:, :UNIQUENESS_NEIGHBOURS]
    return np.clip(1.0 - nearest.mean(axis=1), 0.0, 1.0).astype(np.float32)


def method_for(count: int) -> Method:
    return "umap" if count >= UMAP_MIN_PHOTOS else "pca"


def coordinates(reduced: np.ndarray, neighbours: Neighbours) -> tuple[np.ndarray, Method]:
    """2-D coordinates for every row of ``reduced`` (the reduced vectors): UMAP on the neighbour graph, or
    PCA for few photos."""
    method = method_for(len(reduced))
    if method == "pca":
        return _pca_2d(reduced), method
    umap_class = _umap_class()
    k = neighbours.indices.shape[1]
    # UMAP's graph lists each point as its own nearest neighbour, at distance 0.
    own = np.arange(len(reduced), dtype=np.int32)[:, None]
    knn_indices = np.hstack([own, neighbours.indices])
    knn_distances = np.hstack([np.zeros_like(own, np.float32), 1.0 - neighbours.similarities]).clip(0.0, None)
    reducer = umap_class(
        n_neighbors=k + 1,
        metric="cosine",
        min_dist=0.1,
        precomputed_knn=(knn_indices, knn_distances.astype(np.float32), None),
        low_memory=True,
    )
    xy = reducer.fit_transform(reduced)
    return np.asarray(xy, np.float32), method


def clusters_of(xy: np.ndarray, vectors: np.ndarray | None) -> np.ndarray:
    """Each row's cluster (-1: noise), by HDBSCAN.

    Up to ``EXACT_CLUSTERS_MAX_PHOTOS`` on the cosine distances of the embeddings ``vectors`` (the finest
    clusters, so different photos are never merged); above (``vectors`` unused: ``None`` will do), on the
    map's coordinates (UMAP keeps neighbourhoods) for a sample, every other photo taking its nearest
    sampled photo's cluster.
    """
    from sklearn.cluster import HDBSCAN

    count = len(xy)
    if count < 3:
        return np.full(count, -1, np.int32)
    if count <= EXACT_CLUSTERS_MAX_PHOTOS:
        assert vectors is not None, "up to EXACT_CLUSTERS_MAX_PHOTOS clusters are found on the embeddings"
        distances = np.clip(1.0 - vectors @ vectors.T, 0.0, 2.0).astype(np.float64)
        np.fill_diagonal(distances, 0.0)
        found = HDBSCAN(
            min_cluster_size=max(3, count // 100), metric="precomputed", cluster_selection_method="leaf"
        ).fit_predict(distances)
        return found.astype(np.int32)
    from sklearn.neighbors import KDTree

    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(count, size=min(CLUSTER_SAMPLE, count), replace=False))
    found = HDBSCAN(min_cluster_size=max(10, len(sample) // 200)).fit_predict(xy[sample])
    nearest = KDTree(xy[sample]).query(xy, k=1, return_distance=False)[:, 0]
    return found[nearest].astype(np.int32)


def cluster_names(clusters: np.ndarray, labels: Sequence[str | None]) -> list[dict[str, object]]:
    """Each cluster's majority label and size, largest first: ``[{"cluster": 0, "label": "dog", "count": 143}]``.

    Example:
        >>> cluster_names(np.array([0, 0, 1, -1]), ["dog", "dog", "cat", "cat"])
        [{'cluster': 0, 'label': 'dog', 'count': 2}, {'cluster': 1, 'label': 'cat', 'count': 1}]
    """
    members: dict[int, Counter[str]] = {}
    for cluster, label in zip(clusters.tolist(), labels, strict=True):
        if cluster >= 0:
            members.setdefault(cluster, Counter())[label or "unlabelled"] += 1
    named = [
        {"cluster": cluster, "label": counts.most_common(1)[0][0], "count": sum(counts.values())}
        for cluster, counts in members.items()
    ]
    return sorted(named, key=lambda c: (-int(c["count"]), int(c["cluster"])))


def place_near(
    similarities: np.ndarray, neighbour_xy: np.ndarray, neighbour_clusters: np.ndarray
) -> tuple[float, float, int]:
    """A new photo's coordinates and cluster from its nearest placed photos (most similar first).

    The coordinates are the neighbours' mean weighted by similarity (how UMAP's own ``transform``
    starts a new point), the cluster the one most of their weight lies in.

    Example:
        >>> place_near(np.array([0.9, 0.9]), np.array([[0.0, 0.0], [2.0, 2.0]]), np.array([1, 1]))
        (1.0, 1.0, 1)
    """
    weights = np.clip(similarities.astype(np.float64), 1e-6, None) ** 4  # the nearest count most
    x, y = (weights[:, None] * neighbour_xy).sum(axis=0) / weights.sum()
    votes: Counter[int] = Counter()
    for cluster, weight in zip(neighbour_clusters.tolist(), weights.tolist(), strict=True):
        votes[int(cluster)] += weight
    return float(x), float(y), votes.most_common(1)[0][0]


def _pca_2d(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2), np.float32)
    centred = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ components[:2].T
    if xy.shape[1] < 2:
        xy = np.hstack([xy, np.zeros((len(xy), 2 - xy.shape[1]), np.float32)])
    return xy.astype(np.float32)


def _umap_class() -> type:
    # umap's package imports TensorFlow (20 s here) only for ParametricUMAP, which the map does not use.
    if "umap" not in sys.modules:
        sys.modules.setdefault("umap.parametric_umap", None)  # type: ignore[arg-type]
    from umap.umap_ import UMAP

    return UMAP
