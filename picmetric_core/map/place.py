"""Placing photos stored after the map was fitted, without a refit: from their nearest placed neighbours.

A new photo goes where the photos most like it are (their coordinates weighted by similarity, the start
UMAP's own ``transform`` optimises from), into the cluster most of that weight lies in; its uniqueness
comes from the same neighbours, as the fit's does. The neighbours are found as the fit found them: the
nearest photos in the fit's reduced space (:mod:`.space`, in memory) are looked up with their embeddings
and ranked by exact cosine similarity. A fit finished before fits kept their space asks the similarity
index that "more like this" asks (pgvector or in-process) instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.map import layout, records
from picmetric_core.map.neighbours import CANDIDATES
from picmetric_core.map.records import MapFit
from picmetric_core.map.space import FitSpace, space_of
from picmetric_core.similar.index import Neighbour

log = logging.getLogger(__name__)

PLACE_NEIGHBOURS = 15
_LOOKUPS = 3  # candidate look-ups per photo when some candidates turn out deleted
NeighboursOf = Callable[[str, int], "list[Neighbour] | None"]
"""The ``k`` stored photos most like a stored photo (``SimilarityIndex.similar``)."""


@dataclass(frozen=True)
class Placement:
    """Where a photo was put: coordinates, cluster and uniqueness."""

    md5: str
    x: float
    y: float
    cluster: int
    uniqueness: float


def placement_in_space(
    sessions: sessionmaker[Session], space: FitSpace, md5: str, vector: np.ndarray
) -> Placement | None:
    """Where the photo ``md5`` with embedding ``vector`` (L2-normalised) goes on the space's fit; ``None``
    when no photo is placed on it."""
    near: dict[int, records.NeighbourPoint] = {}
    for _ in range(_LOOKUPS):
        candidates = space.nearest(vector, CANDIDATES)
        with sessions() as session:
            near = records.neighbour_points(session, space.fit, candidates.tolist())
        deleted = [int(i) for i in candidates if int(i) not in near]
        if deleted:
            space.forget(deleted)
        if not deleted or len(near) >= PLACE_NEIGHBOURS:
            break
    if not near:
        return None
    points = list(near.values())
    similarities = np.array([p.vector for p in points]) @ vector
    nearest = np.argsort(-similarities, kind="stable")[:PLACE_NEIGHBOURS]
    return _placed(
        md5,
        similarities[nearest],
        np.array([(points[i].x, points[i].y) for i in nearest]),
        np.array([points[i].cluster for i in nearest]),
        similarities[nearest],
    )


def placement(sessions: sessionmaker[Session], fit: MapFit, md5: str, similar: NeighboursOf) -> Placement | None:
    """Where ``md5`` goes on a fit without a kept space, from the similarity index; ``None`` when it has no
    embedding or none of its neighbours is placed."""
    neighbours = similar(md5, PLACE_NEIGHBOURS)
    if not neighbours:
        return None
    with sessions() as session:
        placed = records.placed_points(session, fit.id, [n.md5 for n in neighbours])
    near = [n for n in neighbours if n.md5 in placed]
    if not near:
        return None
    return _placed(
        md5,
        np.array([n.similarity for n in near]),
        np.array([placed[n.md5][:2] for n in near]),
        np.array([placed[n.md5][2] for n in near]),
        np.array([n.similarity for n in neighbours]),
    )


def _placed(
    md5: str, similarities: np.ndarray, xy: np.ndarray, clusters: np.ndarray, all_similarities: np.ndarray
) -> Placement:
    x, y, cluster = layout.place_near(similarities, xy, clusters)
    uniqueness = float(layout.uniqueness_of(np.asarray(all_similarities, np.float32)[None, :])[0])
    return Placement(md5, x, y, cluster, uniqueness)


def place_unplaced(sessions: sessionmaker[Session], fit: MapFit, similar: NeighboursOf, *, limit: int) -> int:
    """Place up to ``limit`` photos that have an embedding but no point on ``fit`` yet; returns how many."""
    space = space_of(sessions, fit)
    with sessions() as session:
        pending = records.unplaced(session, fit, limit, after_signature_id=space.last_signature_id if space else None)
        stored = records.embeddings(session, fit.classifier, [i for i, _ in pending]) if pending else None
    vector_of = dict(zip(stored.analysis_ids.tolist(), stored.vectors, strict=True)) if stored else {}
    count = 0
    for analysis_id, md5 in pending:
        if space is not None:
            space.catch_up(sessions)  # the photos placed since the last one: their neighbours too
            vector = vector_of.get(analysis_id)
            found = placement_in_space(sessions, space, md5, vector) if vector is not None else None
        else:
            found = placement(sessions, fit, md5, similar)
        if found is None:
            continue
        row = {
            "analysis_id": analysis_id,
            "x": found.x,
            "y": found.y,
            "cluster": found.cluster,
            "uniqueness": found.uniqueness,
            "placed": "nearest",
        }
        try:
            with sessions.begin() as session:
                records.write_points(session, fit.id, [row])
        except IntegrityError:  # placed by another process meanwhile, or deleted
            continue
        count += 1
    if count:
        log.info("placed %d new photo(s) on the map of %s", count, fit.classifier)
    return count
