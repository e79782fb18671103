"""What the map shows: its points, which of them the History filters keep, and why photos are missing."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.history import HistoryQuery
from picmetric_core.map import records
from picmetric_core.map.fit import fit_map
from picmetric_core.map.place import NeighboursOf, place_unplaced
from picmetric_core.map.records import Cluster, MapFit, MapPoints
from picmetric_core.store import history
from picmetric_core.store.orm import AnalysisRow, BatchItemRow, MapFitRow, MapPointRow, SignatureRow

PLACE_ON_READ = 200  # new photos placed by one read (≈ 20 ms each); more wait for the next read or a refit
AUTO_FIT_MAX_PHOTOS = 1_000  # a history this small is fitted on its first read (seconds), larger ones by a command


@dataclass(frozen=True)
class MapView:
    """The map of one classifier.

    Attributes:
        classifier: Whose embeddings place the photos (``None``: no photo has an embedding yet).
        fit: The fit drawn (``None``: never fitted).
        points: Every placed photo (columns; indexing gives a ``MapPoint``).
        matching: The md5s the History filters keep (the rest are dimmed).
        unplaced: Photos with an embedding still waiting for a place (placed on later reads, or by a refit).
        without_embedding: Stored photos that have no embedding of this classifier, so no place.
    """

    classifier: str | None
    fit: MapFit | None
    points: MapPoints
    matching: frozenset[str]
    unplaced: int
    without_embedding: int


def map_view(
    sessions: sessionmaker[Session], query: HistoryQuery, similar: NeighboursOf, *, place_limit: int = PLACE_ON_READ
) -> MapView:
    """The map with the photos stored since its fit placed (up to ``place_limit``), filtered by ``query``.

    ``query`` must be resolved already (its ``similar_to`` turned into md5s); its paging is ignored.
    """
    with sessions() as session:
        classifier = records.newest_classifier(session)
        fit = records.current_fit(session, classifier) if classifier else None
        photos = len(records.embeddings(session, classifier).analysis_ids) if classifier and fit is None else 0
    if classifier is not None and fit is None and photos <= AUTO_FIT_MAX_PHOTOS:
        fit_map(sessions, classifier)
        with sessions() as session:
            fit = records.current_fit(session, classifier)
    unplaced = photos
    if fit is not None:
        with sessions() as session:
            unplaced = records.count_unplaced(session, fit)
        # Asked first: placing loads the fit's space (~1 s at 100,000 photos, once a process), for nothing
        # when no photo waits.
        if unplaced and place_limit > 0 and place_unplaced(sessions, fit, similar, limit=place_limit):
            with sessions() as session:
                unplaced = records.count_unplaced(session, fit)
    with sessions() as session:
        points = records.points(session, fit.id) if fit is not None else MapPoints.of(())
        matching = frozenset(history.matching_md5s(session, query))
        without = records.count_without_embedding(session, classifier)
    return MapView(classifier, fit, points, matching, unplaced, without)


KEPT_FORMAT = 1  # the layout of a kept read's file (``save_view``); a file of another is not read
_ARRAYS = (
    "x",
    "y",
    "cluster",
    "uniqueness",
    "created_at",
    "top_class",
    "object_start",
    "object_codes",
    "has_faces",
    "batch",
)
_TEXTS = ("md5", "filename", "labels", "thumbnail_key")


def save_view(view: MapView, path: Path) -> None:
    """Writes ``view`` to ``path`` (whole: a reader sees the old file or the new one), for :func:`load_view`.

    The columns go as arrays, the text as one JSON document: no pickle, nothing in it runs when read.
    """
    points = view.points
    texts = {name: list(getattr(points, name)) for name in _TEXTS}
    about = {
        "format": KEPT_FORMAT,
        "classifier": view.classifier,
        "fit": _fit_json(view.fit),
        "matching": list(view.matching),
        "unplaced": view.unplaced,
        "without_embedding": view.without_embedding,
    }
    text = json.dumps(about | {"texts": texts}, separators=(",", ":")).encode()
    buffer = io.BytesIO()
    arrays = {name: getattr(points, name) for name in _ARRAYS}
    arrays["created_at"] = arrays["created_at"].astype(np.int64)
    np.savez(buffer, text=np.frombuffer(text, np.uint8), **arrays)
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)


def load_view(path: Path) -> MapView | None:
    """A view :func:`save_view` wrote (``None``: a file of another format)."""
    with np.load(path, allow_pickle=False) as loaded:
        about = json.loads(loaded["text"].tobytes())
        if about.get("format") != KEPT_FORMAT:
            return None
        arrays = {name: loaded[name] for name in _ARRAYS}
    arrays["created_at"] = arrays["created_at"].astype("datetime64[us]")
    texts = {name: tuple(values) for name, values in about["texts"].items()}
    return MapView(
        classifier=about["classifier"],
        fit=_fit_of(about["fit"]),
        points=MapPoints(**arrays, **texts),
        matching=frozenset(about["matching"]),
        unplaced=about["unplaced"],
        without_embedding=about["without_embedding"],
    )


def _fit_json(fit: MapFit | None) -> dict[str, object] | None:
    if fit is None:
        return None
    finished = fit.finished_at.isoformat() if fit.finished_at else None
    return asdict(fit) | {"started_at": fit.started_at.isoformat(), "finished_at": finished}


def _fit_of(found: dict[str, Any] | None) -> MapFit | None:
    if found is None:
        return None
    return MapFit(
        id=found["id"],
        classifier=found["classifier"],
        method=found["method"],
        status=found["status"],
        photos=found["photos"],
        clusters=tuple(Cluster(**cluster) for cluster in found["clusters"]),
        started_at=datetime.fromisoformat(found["started_at"]),
        finished_at=datetime.fromisoformat(found["finished_at"]) if found["finished_at"] else None,
    )


def map_version(sessions: sessionmaker[Session]) -> tuple[int | str | None, ...]:
    """What a map read depends on, in one query of a few milliseconds: the newest photo, its md5 and how many
    there are, the newest finished fit, the newest point, the newest batch item, the newest embedding. A photo
    stored or deleted, a fit finished, a photo placed or an embedding backfilled changes it (the md5 tells a
    new photo from a deleted one SQLite gave the same id); a page may keep its map read until it does."""
    statement = select(
        select(func.max(AnalysisRow.id)).scalar_subquery(),
        select(AnalysisRow.md5).order_by(AnalysisRow.id.desc()).limit(1).scalar_subquery(),
        select(func.count()).select_from(AnalysisRow).scalar_subquery(),
        select(func.max(MapFitRow.id)).where(MapFitRow.status == "done").scalar_subquery(),
        select(func.max(MapPointRow.id)).scalar_subquery(),
        select(func.max(BatchItemRow.id)).scalar_subquery(),
        select(func.max(SignatureRow.id)).scalar_subquery(),
    )
    with sessions() as session:
        return tuple(session.execute(statement).one())


def uniqueness_of(sessions: sessionmaker[Session], md5s: Sequence[str]) -> dict[str, float]:
    """The uniqueness of these photos on the current map, by md5, in one query (those not on it are left out)."""
    if not md5s:
        return {}
    statement = (
        select(AnalysisRow.md5, MapPointRow.uniqueness)
        .join(MapPointRow, MapPointRow.analysis_id == AnalysisRow.id)
        .where(MapPointRow.fit_id == records.current_fit_id(), MapPointRow.analysis_id.in_(records.ids_of(md5s)))
    )
    with sessions() as session:
        return {md5: float(value) for md5, value in session.execute(statement)}


def has_map(sessions: sessionmaker[Session]) -> bool:
    """Whether the map the History page shows has been fitted."""
    with sessions() as session:
        return session.scalar(select(records.current_fit_id())) is not None
