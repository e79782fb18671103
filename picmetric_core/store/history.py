"""Questions about past analyses: pages of history with filters, label counts, counts over time.

Scores are compared with the raw results the networks keep (see :mod:`picmetric_core.filters`),
so every filter takes the confidence a viewer asked for rather than what happened to be stored.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, exists, func, literal, literal_column, select, tuple_, union_all
from sqlalchemy.orm import Session, selectinload

from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.intake.names import MAX_FILENAME_CHARS
from picmetric_core.results import Analysis
from picmetric_core.store.objects import ObjectKeys
from picmetric_core.store.orm import AnalysisRow, BatchItemRow, ClassificationRow, DetectionRow, FaceRow
from picmetric_core.text_filters import MAX_FILTER_CHARS, check_filter_text

LabelKind = Literal["classifier", "detector"]
T = TypeVar("T")

MAX_PAGE_SIZE = 200
_HEX = re.compile(r"[0-9a-f]{1,32}")
_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class AnalysisRecord:
    """What is known about one analysed image besides what the networks found."""

    md5: str
    created_at: datetime
    filename: str | None
    source: str  # "upload" | "url"
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
class HistoryQuery:
    """Which analyses to list, newest first, and which page of them.

    Attributes:
        label: A classifier (ImageNet) or detector (COCO) label, exactly as the networks name it.
        label_kind: Look for ``label`` only in this network's results; ``None`` looks in both.
        min_score: The lowest confidence at which ``label`` counts as found (used with ``label``).
        has_faces: ``True`` for images with a face, ``False`` for images without.
        min_faces, max_faces: Bounds on the number of faces.
        min_face_score: The confidence from which a face counts (for the three face filters).
        since, until: Analysed at or after ``since`` and before ``until`` (timezone-aware).
        filename: Part of the file name, any case.
        md5: The start of (or the whole) md5.
        similar_to: The md5 of a stored photo: only the photos most like it in content (the service
            resolves this into ``md5_in``; see ``PicMetricService.history``).
        md5_in: Only these md5s (none when empty).
        batch: Only images a batch job with this id stored or found already stored.
        limit: Analyses per page.
        page: Which page (from 1), when paging by offset.
        cursor: ``HistoryPage.next_cursor`` of the page before, when paging by keyset (then
            ``page`` is ignored). Keyset pages stay correct while new analyses arrive.
        with_total: Also count every matching analysis (one more query).

    Raises:
        ValueError: For a value no query can take; text that is not fit to filter by (control
            characters, a lone surrogate, bidi controls, too long) raises the ``ValueError``
            :class:`~picmetric_core.errors.FilterRejected`, whose message a user can read.

    Example:
        >>> HistoryQuery(label="dog", min_score=0.5, has_faces=False).limit
        24
    """

    label: str | None = None
    label_kind: LabelKind | None = None
    min_score: float = DEFAULT_THRESHOLDS.min_detection_score
    has_faces: bool | None = None
    min_faces: int | None = None
    max_faces: int | None = None
    min_face_score: float = DEFAULT_THRESHOLDS.min_face_score
    since: datetime | None = None
    until: datetime | None = None
    filename: str | None = None
    md5: str | None = None
    similar_to: str | None = None
    md5_in: tuple[str, ...] | None = None
    batch: int | None = None
    limit: int = 24
    page: int = 1
    cursor: str | None = None
    with_total: bool = False

    def __post_init__(self) -> None:
        for name, text, max_chars in (
            ("label filter", self.label, MAX_FILTER_CHARS),
            ("file name filter", self.filename, MAX_FILENAME_CHARS),
            ("md5 filter", self.md5, 32),
            ("similar_to filter", self.similar_to, 32),
            ("cursor", self.cursor, MAX_FILTER_CHARS),
        ):
            if text is not None:
                check_filter_text(name, text, max_chars=max_chars)
        if not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {self.limit}")
        if self.page < 1:
            raise ValueError(f"page must be 1 or more, not {self.page}")
        if not 0.0 <= self.min_score <= 1.0 or not 0.0 <= self.min_face_score <= 1.0:
            raise ValueError("scores are between 0 and 1")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} needs a timezone")
        if self.md5 is not None and not _HEX.fullmatch(self.md5.lower()):
            raise ValueError(f"not an md5 or the start of one: {self.md5!r}")
        if self.similar_to is not None and not _MD5.fullmatch(self.similar_to):
            raise ValueError(f"similar_to needs a whole md5 in lower case, not {self.similar_to!r}")
        if self.cursor is not None:
            _decode_cursor(self.cursor)


@dataclass(frozen=True)
class HistoryPage(Generic[T]):
    """One page of history, newest first.

    Attributes:
        items: The analyses on this page.
        next_cursor: Pass as ``HistoryQuery.cursor`` for the next page; ``None`` on the last page.
        page, limit: The page number (offset paging) and the page size asked for.
        total: How many analyses match in all, when ``with_total`` was asked for.
    """

    items: tuple[T, ...]
    next_cursor: str | None
    page: int
    limit: int
    total: int | None = None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@dataclass(frozen=True)
class LabelCount:
    label: str
    count: int  # analyses in which the label was found


@dataclass(frozen=True)
class TimeCount:
    start: date  # first day of the bucket, in UTC
    count: int


def search(session: Session, query: HistoryQuery) -> HistoryPage[StoredAnalysis]:
    """One page of analyses matching ``query``, newest first.

    Example:
        >>> page = search(session, HistoryQuery(label="dog", limit=24))  # doctest: +SKIP
        >>> [item.record.md5 for item in page.items]  # doctest: +SKIP
        ['4f055f233ff79efdb5fdd377b2161c45', ...]
    """
    conditions = _conditions(query)
    statement = select(AnalysisRow).where(*conditions)
    if query.cursor is not None:
        created_at, row_id = _decode_cursor(query.cursor)
        # A row comparison, which Postgres reads straight off the (created_at, id) index.
        after = tuple_(literal(created_at, AnalysisRow.created_at.type), literal(row_id, AnalysisRow.id.type))
        statement = statement.where(tuple_(AnalysisRow.created_at, AnalysisRow.id) < after)
    else:
        statement = statement.offset((query.page - 1) * query.limit)
    statement = (
        statement.order_by(AnalysisRow.created_at.desc(), AnalysisRow.id.desc())
        .limit(query.limit + 1)
        .options(*_children())
    )
    rows = session.scalars(statement).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    total = count(session, query) if query.with_total else None
    return HistoryPage(
        items=tuple(stored_analysis(row) for row in rows),
        next_cursor=_encode_cursor(rows[-1]) if more else None,
        page=query.page,
        limit=query.limit,
        total=total,
    )


def count(session: Session, query: HistoryQuery) -> int:
    """How many analyses match ``query``'s filters (its paging is ignored)."""
    return session.scalar(select(func.count()).select_from(AnalysisRow).where(*_conditions(query))) or 0


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
    if query.since is not None:
        conditions.append(AnalysisRow.created_at >= query.since.astimezone(UTC))
    if query.until is not None:
        conditions.append(AnalysisRow.created_at < query.until.astimezone(UTC))
    if query.filename:
        conditions.append(AnalysisRow.filename.icontains(query.filename, autoescape=True))
    if query.md5:
        md5 = query.md5.lower()
        conditions.append(AnalysisRow.md5 == md5 if len(md5) == 32 else AnalysisRow.md5.startswith(md5))
    if query.md5_in is not None:
        conditions.append(AnalysisRow.md5.in_(query.md5_in))
    if query.batch is not None:
        conditions.append(
            exists().where(
                BatchItemRow.job_id == query.batch,
                BatchItemRow.md5 == AnalysisRow.md5,
                BatchItemRow.status != "failed",
            )
        )
    return conditions


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


def _encode_cursor(row: AnalysisRow) -> str:
    raw = f"{row.created_at.astimezone(UTC).isoformat()}|{row.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, row_id = raw.split("|")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError
        return created_at, int(row_id)
    except ValueError as error:
        raise ValueError(f"not a history cursor: {cursor!r}") from error


def _as_date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(value)
