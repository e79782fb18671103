"""Placing photos stored after the map was fitted, without a refit: from their nearest placed neighbours.

A new photo goes where the photos most like it are (their coordinates weighted by similarity, the start
UMAP's own ``transform`` optimises from), into the cluster most of that weight lies in; its uniqueness
comes from the same neighbours, as the fit's does. The neighbours come from the similarity index that
"more like this" asks (pgvector or in-process), so a placement is one index question and two small writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.map import layout, records
from picmetric_core.map.records import MapFit
from picmetric_core.similar.index import Neighbour

log = logging.getLogger(__name__)

PLACE_NEIGHBOURS = 15
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


def placement(sessions: sessionmaker[Session], fit: MapFit, md5: str, similar: NeighboursOf) -> Placement | None:
    """Where ``md5`` goes on ``fit``; ``None`` when it has no embedding or none of its neighbours is placed."""
    neighbours = similar(md5, PLACE_NEIGHBOURS)
    if not neighbours:
        return None
    with sessions() as session:
        placed = records.placed_points(session, fit.id, [n.md5 for n in neighbours])
    near = [n for n in neighbours if n.md5 in placed]
    if not near:
        return None
    x, y, cluster = layout.place_near(
        np.array([n.similarity for n in near]),
        np.array([placed[n.md5][:2] for n in near]),
        np.array([placed[n.md5][2] for n in near]),
    )
    uniqueness = float(layout.uniqueness_of(np.array([[n.similarity for n in neighbours]], np.float32))[0])
    return Placement(md5, x, y, cluster, uniqueness)


def place_unplaced(sessions: sessionmaker[Session], fit: MapFit, similar: NeighboursOf, *, limit: int) -> int:
    """Place up to ``limit`` photos that have an embedding but no point on ``fit`` yet; returns how many."""
    with sessions() as session:
        pending = records.unplaced(session, fit, limit)
    count = 0
    for analysis_id, md5 in pending:
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
