"""Fitting the map: neighbours, layout and clusters for every photo of a classifier, in resumable stages.

Each stage's result is kept in the fit's row before the next starts (the reduced space and neighbours,
then the layout), and the points are written in committed chunks, so ``picmetric map fit`` run again
after an interruption carries on from the last stage it finished. The previous map stays the map until
the new fit is done; the finished fit then keeps its reduced space for placing new photos (:mod:`.space`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.map import layout, records
from picmetric_core.map.neighbours import Neighbours, nearest_neighbours
from picmetric_core.map.projection import Projection, fit_projection
from picmetric_core.map.space import SpaceArrays
from picmetric_core.store.orm import MapFitRow, utc_now

log = logging.getLogger(__name__)

FitProgress = Callable[[str, int, int], None]
"""Told ``(stage, done, total)``: stage is ``neighbours``, ``layout`` or ``points``."""


@dataclass(frozen=True)
class FitReport:
    """What a fit did: its id, classifier, method, photos placed, clusters found, and the stage it resumed."""

    fit_id: int
    classifier: str
    method: str
    photos: int
    clusters: int
    resumed: str | None


def fit_map(
    sessions: sessionmaker[Session], classifier: str | None = None, *, on_progress: FitProgress | None = None
) -> FitReport | None:
    """Fit (or finish fitting) the map of ``classifier`` (default: the newest one); ``None`` without embeddings."""
    progress = on_progress or _quiet
    with sessions() as session:
        classifier = classifier or records.newest_classifier(session)
        if classifier is None:
            return None
        stored = records.embeddings(session, classifier)
        unfinished = records.unfinished_fit(session, classifier)
    if len(stored.analysis_ids) == 0:
        return None
    checkpoint = records.unpack(unfinished.checkpoint) if unfinished and unfinished.checkpoint else None
    if checkpoint is not None and "last_signature_id" not in checkpoint:
        checkpoint = None  # an interrupted fit of an earlier version, without a reduced space: start again
    resumed = unfinished.status if unfinished is not None and checkpoint is not None else None
    fit_id = unfinished.id if unfinished is not None else _new_fit(sessions, classifier, len(stored.analysis_ids))
    if checkpoint is None or not _still_stored(stored.analysis_ids, checkpoint["ids"]):
        checkpoint, resumed = _neighbours_stage(sessions, fit_id, stored, progress), None
    if "xy" not in checkpoint:
        checkpoint = _layout_stage(sessions, fit_id, classifier, stored, checkpoint, progress)
    _points_stage(sessions, fit_id, checkpoint, progress)
    space = SpaceArrays(
        checkpoint["ids"], checkpoint["reduced"], _projection(checkpoint), int(checkpoint["last_signature_id"])
    )
    with sessions.begin() as session:
        records.finish_fit(session, fit_id, classifier, space.pack())
        fit = records.current_fit(session, classifier)
    assert fit is not None
    log.info("fitted the map of %s: %d photos, %d clusters (%s)", classifier, fit.photos, len(fit.clusters), fit.method)
    return FitReport(fit_id, classifier, fit.method, fit.photos, len(fit.clusters), resumed)


def _quiet(stage: str, done: int, total: int) -> None:
    pass


def _new_fit(sessions: sessionmaker[Session], classifier: str, photos: int) -> int:
    with sessions.begin() as session:
        row = MapFitRow(
            classifier=classifier,
            method=layout.method_for(photos),
            status="neighbours",
            photos=photos,
            clusters=[],
            started_at=utc_now(),
        )
        session.add(row)
        session.flush()
        return row.id


def _still_stored(stored_ids: np.ndarray, fitted_ids: np.ndarray) -> bool:
    """Whether every photo of a checkpoint is still stored (its neighbour graph points at their rows)."""
    return bool(np.isin(fitted_ids, stored_ids).all())


def _rows_of(stored: records.Embeddings, ids: np.ndarray) -> np.ndarray:
    if np.array_equal(ids, stored.analysis_ids):
        return stored.vectors
    return stored.vectors[np.searchsorted(stored.analysis_ids, ids)]


def _projection(checkpoint: dict[str, np.ndarray]) -> Projection:
    return Projection(checkpoint["mean"], checkpoint["components"])


def _neighbours_stage(
    sessions: sessionmaker[Session], fit_id: int, stored: records.Embeddings, progress: FitProgress
) -> dict[str, np.ndarray]:
    projection = fit_projection(stored.vectors)
    # float16 as kept in the checkpoint, so a resumed fit lays out exactly what an uninterrupted one would
    reduced = projection.project(stored.vectors).astype(np.float16)
    found = nearest_neighbours(
        stored.vectors,
        reduced.astype(np.float32),
        layout.NEIGHBOURS,
        on_progress=lambda done, total: progress("neighbours", done, total),
    )
    checkpoint = {
        "ids": stored.analysis_ids,
        "indices": found.indices,
        "similarities": found.similarities,
        "reduced": reduced,
        "mean": projection.mean,
        "components": projection.components,
        "last_signature_id": np.array(stored.last_signature_id, np.int64),
    }
    with sessions.begin() as session:
        row = session.get_one(MapFitRow, fit_id)
        row.status, row.photos = "neighbours", len(stored.analysis_ids)
        row.method = layout.method_for(len(stored.analysis_ids))
        row.checkpoint = records.pack(**checkpoint)
    return checkpoint


def _layout_stage(
    sessions: sessionmaker[Session],
    fit_id: int,
    classifier: str,
    stored: records.Embeddings,
    checkpoint: dict[str, np.ndarray],
    progress: FitProgress,
) -> dict[str, np.ndarray]:
    ids = checkpoint["ids"]
    neighbours = Neighbours(checkpoint["indices"], checkpoint["similarities"])
    progress("layout", 0, 2)
    with warnings.catch_warnings():  # UMAP and HDBSCAN warn about options the map does not use
        warnings.simplefilter("ignore")
        xy, method = layout.coordinates(checkpoint["reduced"].astype(np.float32), neighbours)
        progress("layout", 1, 2)
        exact = len(ids) <= layout.EXACT_CLUSTERS_MAX_PHOTOS  # on the full embeddings' distances
        clusters = layout.clusters_of(xy, _rows_of(stored, ids) if exact else None)
    progress("layout", 2, 2)
    with sessions() as session:
        top = records.top_classes(session, ids.tolist())
    named = layout.cluster_names(clusters, [top.get(int(i)) for i in ids])
    laid_out = {
        "ids": ids,
        "xy": xy,
        "clusters": clusters,
        "uniqueness": layout.uniqueness_of(neighbours.similarities),
        "reduced": checkpoint["reduced"],
        "mean": checkpoint["mean"],
        "components": checkpoint["components"],
        "last_signature_id": checkpoint["last_signature_id"],
    }
    with sessions.begin() as session:
        row = session.get_one(MapFitRow, fit_id)
        row.status, row.method, row.clusters = "laid_out", method, named
        row.checkpoint = records.pack(**laid_out)
    return laid_out


def _points_stage(
    sessions: sessionmaker[Session], fit_id: int, laid_out: dict[str, np.ndarray], progress: FitProgress
) -> None:
    ids = laid_out["ids"]
    with sessions() as session:
        done = records.written_ids(session, fit_id)
        alive = records.existing_ids(session, ids.tolist())
    total = len(ids)
    for start in range(0, total, records.WRITE_CHUNK):
        stop = min(start + records.WRITE_CHUNK, total)
        rows = [
            {
                "analysis_id": int(ids[i]),
                "x": float(laid_out["xy"][i, 0]),
                "y": float(laid_out["xy"][i, 1]),
                "cluster": int(laid_out["clusters"][i]),
                "uniqueness": float(laid_out["uniqueness"][i]),
                "placed": "fit",
            }
            for i in range(start, stop)
            if int(ids[i]) not in done and int(ids[i]) in alive
        ]
        with sessions.begin() as session:
            records.write_points(session, fit_id, rows)
        progress("points", stop, total)
