"""Questions about past analyses, in SQL: pages of history with filters, label counts, counts over time.

What a question is (:class:`~picmetric_core.history.HistoryQuery`) and the page it answers live in
:mod:`picmetric_core.history`; this module runs them. Scores are compared with the raw results the
networks keep (see :mod:`picmetric_core.filters`), so every filter takes the confidence a viewer asked
for rather than what happened to be stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session, aliased, selectinload

from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.history import (
    HistoryPage,
    HistoryQuery,
    LabelKind,
    decode_cursor,
    decode_uniqueness_cursor,
    encode_cursor,
    encode_uniqueness_cursor,
)
from picmetric_core.map.records import current_fit_id
from picmetric_core.results import Analysis
from picmetric_core.store.objects import ObjectKeys
from picmetric_core.store.orm import (
    AnalysisRow,
    BatchItemRow,
    ClassificationRow,
    DetectionRow,
    FaceRow,
    MapPointRow,
)


@dataclass(frozen=True)
class AnalysisRecord:
    """What is known about one analysed image besides what the networks found."""

    md5: str
    created_at: datetime
    filename: str | None
    source: str  # "upload" | "url" | "live"
    source_url: str | None
    content_type: str
    byte_size: int
    width: int
    height: int
    keys: ObjectKeys


@dataclass(frozen=True)
class StoredAnalysis:
    """An analysis as the database holds it."""

    record: AnalysisRecord
    analysis: Analysis


@dataclass(frozen=True)
class LabelCount:
    label: str
    count: int  # analyses in which the label was found


@dataclass(frozen=True)
class TimeCount:
    start: date  # first day of the bucket, in UTC
    count: int


def search(session: Session, query: HistoryQuery) -> HistoryPage[StoredAnalysis]:
    """One page of analyses matching ``query``, in its ``sort`` order (newest first by default).

    Example:
        >>> page = search(session, HistoryQuery(label="dog", limit=24))  # doctest: +SKIP
        >>> [item.record.md5 for item in page.items]  # doctest: +SKIP
        ['4f055f233ff79efdb5fdd377b2161c45', ...]
    """
    statement, cursor_after = _newest_first(query) if query.sort == "newest" else _by_uniqueness(query)
    if query.cursor is None:
        statement = statement.offset((query.page - 1) * query.limit)
    statement = statement.where(*_conditions(query)).limit(query.limit + 1).options(*_children())
    rows = session.execute(statement).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    total = count(session, query) if query.with_total else None
    return HistoryPage(
        items=tuple(stored_analysis(row[0]) for row in rows),
        next_cursor=cursor_after(rows[-1]) if more else None,
        page=query.page,
        limit=query.limit,
        total=total,
    )


def count(session: Session, query: HistoryQuery) -> int:
    """How many analyses match ``query``'s filters (its paging is ignored)."""
    return session.scalar(select(func.count()).select_from(AnalysisRow).where(*_conditions(query))) or 0


def matching_md5s(session: Session, query: HistoryQuery) -> list[str]:
    """The md5 of every analysis matching ``query``'s filters (its paging is ignored), oldest first."""
    statement = select(AnalysisRow.md5).where(*_conditions(query))
    return list(session.scalars(statement.order_by(AnalysisRow.created_at, AnalysisRow.id)))


def get_by_md5(session: Session, md5: str) -> StoredAnalysis | None:
    """The stored analysis of the image with this md5, or ``None``."""
    row = session.scalars(select(AnalysisRow).where(AnalysisRow.md5 == md5.lower()).options(*_children())).first()
    return stored_analysis(row) if row is not None else None


def label_frequencies(
    session: Session,
    kind: LabelKind = "detector",
    *,
    min_score: float = DEFAULT_THRESHOLDS.min_detection_score,
    query: HistoryQuery | None = None,
    limit: int = 20,
) -> list[LabelCount]:
    """How many analyses found each label at ``min_score`` or more, most frequent first.

    A label's count is the number of analyses a history search for that label (same ``kind`` and
    ``min_score``) finds. ``query``'s filters other than paging narrow the analyses counted.
    """
    table = _LABEL_TABLES[kind]
    count = func.count(func.distinct(table.analysis_id)).label("n")
    statement = select(table.label, count).where(table.score >= min_score)
    if query is not None and (conditions := _conditions(query)):
        statement = statement.join(AnalysisRow, AnalysisRow.id == table.analysis_id).where(*conditions)
    statement = statement.group_by(table.label).order_by(count.desc(), table.label).limit(limit)
    return [LabelCount(label, n) for label, n in session.execute(statement)]


def counts_over_time(
    session: Session, query: HistoryQuery | None = None, bucket: Literal["day", "month"] = "day"
) -> list[TimeCount]:
    """How many analyses (matching ``query``'s filters) were made per UTC day or month, oldest first."""
    if session.get_bind().dialect.name == "sqlite":
        pattern = "%Y-%m-%d" if bucket == "day" else "%Y-%m-01"
        start = func.strftime(pattern, AnalysisRow.created_at)
    else:
        # The engine's sessions run in UTC (see picmetric_core.store.database), so buckets are UTC days.
        start = func.date_trunc(bucket, AnalysisRow.created_at)
    start = start.label("start")
    statement = select(start, func.count().label("n")).where(*_conditions(query or HistoryQuery()))
    statement = statement.group_by(literal_column("start")).order_by(literal_column("start"))
    return [TimeCount(_as_date(value), n) for value, n in session.execute(statement)]


def stored_analysis(row: AnalysisRow) -> StoredAnalysis:
    """The typed record and analysis an :class:`AnalysisRow` (with its children loaded) holds."""
    record = AnalysisRecord(
        md5=row.md5,
        created_at=row.created_at,
        filename=row.filename,
        source=row.source,
        source_url=row.source_url,
        content_type=row.content_type,
        byte_size=row.byte_size,
        width=row.width,
        height=row.height,
        keys=ObjectKeys(
            original=row.original_key,
            detections=row.detections_key,
            faces=row.faces_key,
            thumbnail=row.thumbnail_key,
        ),
    )
    return StoredAnalysis(record=record, analysis=row.to_analysis())


_LABEL_TABLES: dict[LabelKind, type[ClassificationRow] | type[DetectionRow]] = {
    "classifier": ClassificationRow,
    "detector": DetectionRow,
}


def _newest_first(query: HistoryQuery) -> tuple[Select, Callable[[Row], str]]:
    """Analyses newest first, after ``query.cursor``; and the cursor that follows a row."""
    statement = select(AnalysisRow)
    if query.cursor is not None:
        created_at, row_id = decode_cursor(query.cursor)
        # A row comparison, which Postgres reads straight off the (created_at, id) index.
        after = tuple_(literal(created_at, AnalysisRow.created_at.type), literal(row_id, AnalysisRow.id.type))
        statement = statement.where(tuple_(AnalysisRow.created_at, AnalysisRow.id) < after)
    statement = statement.order_by(AnalysisRow.created_at.desc(), AnalysisRow.id.desc())
    return statement, lambda row: encode_cursor(row[0].created_at, row[0].id)


def _by_uniqueness(query: HistoryQuery) -> tuple[Select, Callable[[Row], str]]:
    """Analyses with their uniqueness on the current map, most or least unique first (ties and photos not on
    the map newest first, after the others), after ``query.cursor``; and the cursor that follows a row."""
    point = aliased(MapPointRow, name="map_point")  # not the uniqueness filter's own EXISTS over map_points
    on_map = and_(point.analysis_id == AnalysisRow.id, point.fit_id == current_fit_id())
    statement = select(AnalysisRow, point.uniqueness).outerjoin(point, on_map)
    most = query.sort == "most_unique"
    if query.cursor is not None:
        value, row_id = decode_uniqueness_cursor(query.cursor)
        earlier_id = AnalysisRow.id < row_id
        if value is None:
            statement = statement.where(point.uniqueness.is_(None), earlier_id)
        else:
            further = point.uniqueness < value if most else point.uniqueness > value
            statement = statement.where(
                or_(point.uniqueness.is_(None), further, and_(point.uniqueness == value, earlier_id))
            )
    order = point.uniqueness.desc() if most else point.uniqueness.asc()
    statement = statement.order_by(point.uniqueness.is_(None), order, AnalysisRow.id.desc())
    return statement, lambda row: encode_uniqueness_cursor(row[1], row[0].id)


def _children() -> list:
    return [
        selectinload(AnalysisRow.classifications),
        selectinload(AnalysisRow.detections),
        selectinload(AnalysisRow.faces),
    ]


def _conditions(query: HistoryQuery) -> list[ColumnElement[bool]]:
    """The filters of ``query`` on ``analyses``.

    Child-table filters are correlated ``EXISTS`` so that Postgres can choose per label: walk the
    newest analyses and probe each (frequent labels, under a millisecond), or collect the few
    matches first and sort them (rare labels). ``IN (subquery)`` would always collect.
    """
    conditions: list[ColumnElement[bool]] = []
    if query.label is not None:
        conditions.append(_label_found(query.label, query.label_kind, query.min_score))
    conditions += _face_conditions(query)
    conditions += date_name_and_md5_conditions(query, AnalysisRow)
    if query.batch is not None:
        conditions.append(
            exists().where(
                BatchItemRow.job_id == query.batch,
                BatchItemRow.md5 == AnalysisRow.md5,
                BatchItemRow.status != "failed",
            )
        )
    if query.min_uniqueness is not None or query.max_uniqueness is not None:
        conditions.append(_uniqueness_within(query.min_uniqueness, query.max_uniqueness))
    return conditions


def date_name_and_md5_conditions(query: HistoryQuery, row: type) -> list[ColumnElement[bool]]:
    """The filters any stored item answers (photos' ``AnalysisRow``, clips' ``VideoRow``): its dates, file
    name and md5 (whole, its start, or one of a list)."""
    conditions: list[ColumnElement[bool]] = []
    if query.since is not None:
        conditions.append(row.created_at >= query.since.astimezone(UTC))
    if query.until is not None:
        conditions.append(row.created_at < query.until.astimezone(UTC))
    if query.filename:
        conditions.append(row.filename.icontains(query.filename, autoescape=True))
    if query.md5:
        md5 = query.md5.lower()
        conditions.append(row.md5 == md5 if len(md5) == 32 else row.md5.startswith(md5))
    if query.md5_in is not None:
        conditions.append(row.md5.in_(query.md5_in))
    return conditions


def _uniqueness_within(low: float | None, high: float | None) -> ColumnElement[bool]:
    """On the current map, with a uniqueness from ``low`` to ``high`` (photos not on it never are)."""
    bounds = [MapPointRow.analysis_id == AnalysisRow.id, MapPointRow.fit_id == current_fit_id()]
    if low is not None:
        bounds.append(MapPointRow.uniqueness >= low)
    if high is not None:
        bounds.append(MapPointRow.uniqueness <= high)
    return exists().where(*bounds)


def _label_found(label: str, kind: LabelKind | None, min_score: float) -> ColumnElement[bool]:
    tables = [_LABEL_TABLES[kind]] if kind else list(_LABEL_TABLES.values())
    # One EXISTS over a UNION ALL (not two ORed EXISTS), which Postgres plans as a single semi-join.
    results = union_all(*(select(t.analysis_id, t.label, t.score) for t in tables)).subquery("results")
    return exists().where(
        results.c.analysis_id == AnalysisRow.id, results.c.label == label, results.c.score >= min_score
    )


def _face_conditions(query: HistoryQuery) -> list[ColumnElement[bool]]:
    lowest = max(query.min_faces or 0, 1 if query.has_faces else 0)
    highest = 0 if query.has_faces is False else query.max_faces
    counted = FaceRow.analysis_id == AnalysisRow.id, FaceRow.score >= query.min_face_score
    face_count = select(func.count()).where(*counted).scalar_subquery()
    conditions: list[ColumnElement[bool]] = []
    if lowest == 1:
        conditions.append(exists().where(*counted))
    elif lowest > 1:
        conditions.append(face_count >= lowest)
    if highest == 0:
        conditions.append(~exists().where(*counted))
    elif highest is not None:
        conditions.append(face_count <= highest)
    return conditions


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value)
