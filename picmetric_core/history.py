"""What a question about past analyses is: the filters a user sets, the query they make, the page it answers.

Every door fills one :class:`HistoryFilters`: the API from its query parameters, ``picmetric export``
from its flags (made from the model's fields), the History page from its widgets and its link.
:meth:`HistoryFilters.query` adds the paging and the face threshold and gives the
:class:`HistoryQuery` that :mod:`picmetric_core.store.history` runs and that checks every text
(:mod:`picmetric_core.text_filters`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field

from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.intake.names import MAX_FILENAME_CHARS
from picmetric_core.text_filters import MAX_FILTER_CHARS, check_filter_text

LabelKind = Literal["classifier", "detector"]
HistorySort = Literal["newest", "most_unique", "least_unique"]
"""The gallery's order: newest first, or by uniqueness on the map (photos not on it come after the others)."""
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 24
MAX_PAGE_SIZE = 200
LABEL_MIN_SCORE = DEFAULT_THRESHOLDS.min_detection_score
"""The confidence from which a label counts when none is asked for."""
MAX_FACES = 10_000
MAX_BATCH_ID = 2**31 - 1  # the database column's range
_HEX = re.compile(r"[0-9a-f]{1,32}")
_MD5 = re.compile(r"[0-9a-f]{32}")

# Text that HistoryQuery checks, by the one text rule: the schema shows the same limits to API clients.
LabelText = Annotated[str, Field(json_schema_extra={"maxLength": MAX_FILTER_CHARS})]
FileNameText = Annotated[str, Field(json_schema_extra={"maxLength": MAX_FILENAME_CHARS})]
Md5Start = Annotated[str, Field(json_schema_extra={"pattern": r"^[0-9a-fA-F]{1,32}$"})]
Md5 = Annotated[str, Field(json_schema_extra={"pattern": r"^[0-9a-fA-F]{32}$"})]


@dataclass(frozen=True)
class HistoryQuery:
    """Which analyses to list, in which order, and which page of them.

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
        min_uniqueness, max_uniqueness: Bounds (0 to 1, inclusive) on the uniqueness on the current map
            (:mod:`picmetric_core.map`); either bound leaves out the photos not on the map.
        sort: ``newest`` first, ``most_unique`` first (outliers) or ``least_unique`` first (redundancy);
            by uniqueness, photos not on the map come last, newest first.
        limit: Analyses per page.
        page: Which page (from 1), when paging by offset.
        cursor: ``HistoryPage.next_cursor`` of the page before (of the same ``sort``), when paging by
            keyset (then ``page`` is ignored). Keyset pages stay correct while new analyses arrive.
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
    min_score: float = LABEL_MIN_SCORE
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
    min_uniqueness: float | None = None
    max_uniqueness: float | None = None
    sort: HistorySort = "newest"
    limit: int = DEFAULT_PAGE_SIZE
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
        if any(bound is not None and not 0.0 <= bound <= 1.0 for bound in (self.min_uniqueness, self.max_uniqueness)):
            raise ValueError("uniqueness is between 0 and 1")
        if self.sort not in get_args(HistorySort):
            raise ValueError(f"sort is one of {', '.join(get_args(HistorySort))}, not {self.sort!r}")
        for name in ("since", "until"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} needs a timezone")
        if self.md5 is not None and not _HEX.fullmatch(self.md5.lower()):
            raise ValueError(f"not an md5 or the start of one: {self.md5!r}")
        if self.similar_to is not None and not _MD5.fullmatch(self.similar_to):
            raise ValueError(f"similar_to needs a whole md5 in lower case, not {self.similar_to!r}")
        if self.cursor is not None:
            decode_cursor(self.cursor) if self.sort == "newest" else decode_uniqueness_cursor(self.cursor)


class HistoryFilters(BaseModel):
    """The history filters a user sets, as every door takes them (without paging).

    Numbers are bounded here; text is checked when :meth:`query` builds the :class:`HistoryQuery`
    (so a hostile text gets the same message from every door). A ``pydantic.ValidationError``
    and :class:`~picmetric_core.errors.FilterRejected` are both ``ValueError``.

    Example:
        >>> HistoryFilters(label="dog").query().min_score, HistoryFilters().query().min_score
        (0.25, 0.0)
        >>> query = HistoryFilters(md5="4F05", batch="7").query(limit=12)
        >>> query.md5, query.batch, query.limit
        ('4f05', 7, 12)
    """

    model_config = ConfigDict(frozen=True)

    label: LabelText | None = Field(None, description="An ImageNet or COCO label")
    label_kind: LabelKind | None = Field(None, description="Look for the label only in this network's results")
    min_score: float | None = Field(
        None,
        ge=0,
        le=1,
        description=f"Confidence from which a label counts (default {LABEL_MIN_SCORE} with a label, else 0)",
    )
    has_faces: bool | None = Field(None, description="Whether an image shows a face")
    min_faces: int | None = Field(None, ge=0, le=MAX_FACES, description="At least this many faces")
    max_faces: int | None = Field(None, ge=0, le=MAX_FACES, description="At most this many faces")
    since: datetime | None = Field(None, description="Analysed from this moment: ISO 8601 with a timezone")
    until: datetime | None = Field(None, description="Analysed before this moment: ISO 8601 with a timezone")
    filename: FileNameText | None = Field(None, description="Part of the file name")
    md5: Md5Start | None = Field(None, description="An md5 or its start")
    similar_to: Md5 | None = Field(None, description="Only the photos most like this one (its md5)")
    batch: int | None = Field(None, ge=1, le=MAX_BATCH_ID, description="Only images of this batch job")
    min_uniqueness: float | None = Field(
        None, ge=0, le=1, description="Uniqueness on the map at least this (photos not on the map are left out)"
    )
    max_uniqueness: float | None = Field(
        None, ge=0, le=1, description="Uniqueness on the map at most this (photos not on the map are left out)"
    )

    def query(
        self,
        *,
        min_face_score: float = DEFAULT_THRESHOLDS.min_face_score,
        sort: HistorySort = "newest",
        limit: int = DEFAULT_PAGE_SIZE,
        page: int = 1,
        cursor: str | None = None,
        with_total: bool = False,
    ) -> HistoryQuery:
        """The query of these filters, with faces counted from ``min_face_score``, in ``sort`` order, at this page.

        Raises:
            ValueError: A text not fit to filter by (``FilterRejected``), a moment without a timezone.
        """
        label_score = LABEL_MIN_SCORE if self.label is not None or self.label_kind is not None else 0.0
        return HistoryQuery(
            **self.model_dump(include=set(HistoryFilters.model_fields) - {"min_score", "md5", "similar_to"}),
            min_score=label_score if self.min_score is None else self.min_score,
            md5=self.md5.lower() if self.md5 else None,
            similar_to=self.similar_to.lower() if self.similar_to else None,
            min_face_score=min_face_score,
            sort=sort,
            limit=limit,
            page=page,
            cursor=cursor,
            with_total=with_total,
        )


@dataclass(frozen=True)
class HistoryPage(Generic[T]):
    """One page of history, in the query's order.

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


def encode_cursor(created_at: datetime, row_id: int) -> str:
    """The cursor that continues after the analysis stored at ``created_at`` with id ``row_id``.

    Example:
        >>> cursor = encode_cursor(datetime(2026, 12, 1, tzinfo=UTC), 42)
        >>> decode_cursor(cursor)
        (datetime.datetime(2026, 12, 1, 0, 0, tzinfo=datetime.timezone.utc), 42)
    """
    raw = f"{created_at.astimezone(UTC).isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The moment and row id a cursor carries; ``ValueError`` for text that is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, row_id = raw.split("|")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError
        return created_at, int(row_id)
    except ValueError as error:
        raise ValueError(f"not a history cursor: {cursor!r}") from error


def encode_uniqueness_cursor(uniqueness: float | None, row_id: int) -> str:
    """The cursor of a uniqueness sort that continues after the analysis with id ``row_id`` and this
    uniqueness (``None``: not on the map).

    Example:
        >>> decode_uniqueness_cursor(encode_uniqueness_cursor(0.8125, 42))
        (0.8125, 42)
        >>> decode_uniqueness_cursor(encode_uniqueness_cursor(None, 7))
        (None, 7)
    """
    raw = f"u|{'' if uniqueness is None else repr(float(uniqueness))}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_uniqueness_cursor(cursor: str) -> tuple[float | None, int]:
    """The uniqueness and row id a uniqueness sort's cursor carries; ``ValueError`` for text that is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, uniqueness, row_id = raw.split("|")
        if kind != "u":
            raise ValueError
        value = float(uniqueness) if uniqueness else None
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError
        return value, int(row_id)
    except ValueError as error:
        raise ValueError(f"not a cursor of a uniqueness sort: {cursor!r}") from error
