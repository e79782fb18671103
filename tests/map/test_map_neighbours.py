"""The map's reduced space and neighbour search, numbers only: the same neighbours as a full search."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from picmetric_core.map import neighbours
from picmetric_core.map.projection import fit_projection
from picmetric_core.map.records import MapFit
from picmetric_core.map.space import FitSpace, SpaceArrays
from picmetric_core.map.top_columns import top_columns


def _exact(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def _normalised(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_the_one_pass_pick_finds_the_same_columns_as_a_full_sort_but_its_own():
    scores = np.random.default_rng(0).standard_normal((50, 3_000)).astype(np.float32)
    scores[np.arange(50), np.arange(100, 150)] = 99.0  # rows 100-149's own columns: left out

    picked = top_columns(scores, 20, 100)

    scores[np.arange(50), np.arange(100, 150)] = -np.inf
    full = np.argpartition(-scores, 19, axis=1)[:, :20]
    assert all(set(a) == set(b) for a, b in zip(picked.tolist(), full.tolist(), strict=True))


def test_copies_with_equal_scores_still_give_each_row_its_count():
    picked = top_columns(np.ones((10, 2_000), np.float32), 5, 0)

    assert picked.shape == (10, 5) and all(len(set(row)) == 5 and -1 not in row for row in picked.tolist())


def test_neighbours_in_a_space_that_keeps_every_direction_are_the_exact_ones():
    vectors = _normalised(np.abs(np.random.default_rng(2).standard_normal((300, 40))))
    projection = fit_projection(vectors, dims=40)

    found = neighbours.nearest_neighbours(vectors, projection.project(vectors), 10)

    indices, similarities = _exact(vectors, 10)
    assert np.array_equal(found.indices, indices)
    np.testing.assert_allclose(found.similarities, similarities, rtol=1e-5)


def test_a_reduced_search_keeps_the_near_copies():
    rng = np.random.default_rng(3)
    photos = np.abs(rng.standard_normal((200, 256)))
    copies = photos + 0.05 * np.abs(rng.standard_normal(photos.shape))
    vectors = _normalised(np.vstack([photos, copies]))

    found = neighbours.nearest_neighbours(vectors, fit_projection(vectors, dims=16).project(vectors), 5)

    assert np.array_equal(found.indices[:200, 0], np.arange(200, 400))  # each photo's nearest is its copy
    assert np.array_equal(found.indices[200:, 0], np.arange(200))


def test_the_projection_is_the_main_directions():
    rng = np.random.default_rng(4)
    flat = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 30))  # in a 3-dimensional subspace
    projection = fit_projection(flat, dims=3)

    reduced = projection.project(flat)

    distances = np.linalg.norm(flat[:, None] - flat[None], axis=2)
    np.testing.assert_allclose(np.linalg.norm(reduced[:, None] - reduced[None], axis=2), distances, atol=1e-3)


def test_the_space_answers_nearest_first_and_leaves_out_forgotten_photos():
    vectors = _normalised(np.abs(np.random.default_rng(5).standard_normal((100, 32))))
    projection = fit_projection(vectors, dims=32)
    fit = MapFit(1, "c", "umap", "done", 100, (), datetime.now(UTC), None)
    kept = SpaceArrays(np.arange(1000, 1100), projection.project(vectors), projection, last_signature_id=7)
    space = FitSpace(fit, SpaceArrays.unpack(kept.pack()))

    nearest = space.nearest(vectors[7], 4)
    space.forget([1007])

    assert nearest[0] == 1007 and len(nearest) == 4 and space.last_signature_id == 7
    assert 1007 not in space.nearest(vectors[7], 4) and len(space) == 99
