"""What the map shows: its points, which of them the History filters keep, and why photos are missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.history import HistoryQuery
from picmetric_core.map import records
from picmetric_core.map.fit import fit_map
from picmetric_core.map.place import NeighboursOf, place_unplaced
from picmetric_core.map.records import MapFit, MapPoint
from picmetric_core.store import history
from picmetric_core.store.orm import AnalysisRow, BatchItemRow, MapFitRow, MapPointRow

PLACE_ON_READ = 200  # new photos placed by one read (≈ 20 ms each); more wait for the next read or a refit
AUTO_FIT_MAX_PHOTOS = 1_000  # a history this small is fitted on its first read (seconds), larger ones by a command


@dataclass(frozen=True)
class MapView:
    """The map of one classifier.

    Attributes:
        classifier: Whose embeddings place the photos (``None``: no photo has an embedding yet).
        fit: The fit drawn (``None``: never fitted).
        points: Every placed photo.
        matching: The md5s the History filters keep (the rest are dimmed).
        unplaced: Photos with an embedding still waiting for a place (placed on later reads, or by a refit).
        without_embedding: Stored photos that have no embedding of this classifier, so no place.
    """

    classifier: str | None
    fit: MapFit | None
    points: tuple[MapPoint, ...]
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
    if fit is not None and place_limit > 0:
        place_unplaced(sessions, fit, similar, limit=place_limit)
    with sessions() as session:
        points = tuple(records.points(session, fit.id)) if fit is not None else ()
        matching = frozenset(history.matching_md5s(session, query))
        unplaced = records.count_unplaced(session, fit) if fit is not None else photos
        without = records.count_without_embedding(session, classifier)
    return MapView(classifier, fit, points, matching, unplaced, without)


def map_version(sessions: sessionmaker[Session]) -> tuple[int | None, ...]:
    """What a map read depends on, in one query of a few milliseconds: the newest photo and how many there
    are, the newest finished fit, the newest point, the newest batch item. A photo stored or deleted, a fit
    finished or a photo placed changes it; a page may keep its map read until it does."""
    statement = select(
        select(func.max(AnalysisRow.id)).scalar_subquery(),
        select(func.count()).select_from(AnalysisRow).scalar_subquery(),
        select(func.max(MapFitRow.id)).where(MapFitRow.status == "done").scalar_subquery(),
        select(func.max(MapPointRow.id)).scalar_subquery(),
        select(func.max(BatchItemRow.id)).scalar_subquery(),
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
