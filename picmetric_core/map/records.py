"""The map's rows: fits and points in the database, read and written. No layout maths here."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

import numpy as np
from sqlalchemy import (
    BigInteger,
    ScalarSelect,
    Select,
    String,
    and_,
    cast,
    delete,
    extract,
    func,
    insert,
    select,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, defer
from sqlalchemy.sql.elements import ColumnElement

from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.similar.signature import EMBEDDING_DTYPE
from picmetric_core.store.orm import (
    AnalysisRow,
    BatchItemRow,
    ClassificationRow,
    DetectionRow,
    FaceRow,
    MapFitRow,
    MapPointRow,
    SignatureRow,
    utc_now,
)

WRITE_CHUNK = 5_000
_READ_CHUNK = 5_000


@dataclass(frozen=True)
class Cluster:
    """A cluster of the map, named by the top class most of its photos share."""

    cluster: int
    label: str
    count: int

    @property
    def name(self) -> str:
        return f"{self.label} · {self.count}"


@dataclass(frozen=True)
class MapFit:
    """A fit of the map to one classifier's embeddings."""

    id: int
    classifier: str
    method: str
    status: str
    photos: int
    clusters: tuple[Cluster, ...]
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class MapPoint:
    """A stored photo on the map, with what the map colours and hovers by."""

    md5: str
    x: float
    y: float
    cluster: int
    uniqueness: float
    filename: str | None
    created_at: datetime
    top_class: str | None
    objects: tuple[str, ...]  # the detector's labels at the default threshold, most confident first
    has_faces: bool
    batch: int | None  # the first batch job that stored or saw it
    thumbnail_key: str


@dataclass(frozen=True, eq=False)
class MapPoints(Sequence[MapPoint]):
    """Every point of a fit as columns, one entry per photo in analysis id order: what the map draws, colours
    and hovers by, read without an object per photo (100,000 ``MapPoint`` objects and their rows took seconds).
    Indexing or iterating gives :class:`MapPoint` objects, made as asked.

    Attributes:
        labels: The class and object names ``top_class`` and ``object_codes`` index.
        top_class: Each photo's top class (int32; -1: none).
        object_start: Where each photo's objects start in ``object_codes`` (int64, one more than the photos):
            photo ``i``'s are ``object_codes[object_start[i]:object_start[i + 1]]``, most confident first.
        created_at: ``datetime64[us]`` in UTC.
        batch: The first batch job that stored or saw it (int64; -1: none).
    """

    md5: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    cluster: np.ndarray
    uniqueness: np.ndarray
    filename: tuple[str | None, ...]
    created_at: np.ndarray
    labels: tuple[str, ...]
    top_class: np.ndarray
    object_start: np.ndarray
    object_codes: np.ndarray
    has_faces: np.ndarray
    batch: np.ndarray
    thumbnail_key: tuple[str, ...]

    @classmethod
    def of(cls, points: Sequence[MapPoint]) -> MapPoints:
        """``points`` as columns (as they are when they are columns already).

        >>> dot = MapPoint("a", 1.0, 2.0, 0, 0.5, None, datetime(2026, 1, 1, tzinfo=UTC), "dog", ("ball",), True, 3, "")
        >>> columns = MapPoints.of([dot])
        >>> columns[0] == dot, columns.labels
        (True, ('dog', 'ball'))
        """
        if isinstance(points, MapPoints):
            return points
        labels: dict[str, int] = {}

        def code(name: str | None) -> int:
            return -1 if name is None else labels.setdefault(name, len(labels))

        top = [code(p.top_class) for p in points]
        objects = [[code(name) for name in p.objects] for p in points]
        return cls(
            md5=tuple(p.md5 for p in points),
            x=np.array([p.x for p in points], np.float64),
            y=np.array([p.y for p in points], np.float64),
            cluster=np.array([p.cluster for p in points], np.int64),
            uniqueness=np.array([p.uniqueness for p in points], np.float64),
            filename=tuple(p.filename for p in points),
            created_at=np.array([_utc_naive(p.created_at) for p in points], "datetime64[us]"),
            labels=tuple(labels),
            top_class=np.array(top, np.int32),
            object_start=np.concatenate([[0], np.cumsum([len(o) for o in objects], dtype=np.int64)]).astype(np.int64),
            object_codes=np.array([c for o in objects for c in o], np.int32),
            has_faces=np.array([p.has_faces for p in points], bool),
            batch=np.array([-1 if p.batch is None else p.batch for p in points], np.int64),
            thumbnail_key=tuple(p.thumbnail_key for p in points),
        )

    def __len__(self) -> int:
        return len(self.md5)

    @overload
    def __getitem__(self, index: int) -> MapPoint: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[MapPoint, ...]: ...

    def __getitem__(self, index: int | slice) -> MapPoint | tuple[MapPoint, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        i = range(len(self))[index]  # IndexError beyond the end, as a sequence's
        objects = self.object_codes[self.object_start[i] : self.object_start[i + 1]]
        return MapPoint(
            md5=self.md5[i],
            x=float(self.x[i]),
            y=float(self.y[i]),
            cluster=int(self.cluster[i]),
            uniqueness=float(self.uniqueness[i]),
            filename=self.filename[i],
            created_at=self.created_at[i].item().replace(tzinfo=UTC),
            top_class=self.labels[self.top_class[i]] if self.top_class[i] >= 0 else None,
            objects=tuple(self.labels[c] for c in objects),
            has_faces=bool(self.has_faces[i]),
            batch=int(self.batch[i]) if self.batch[i] >= 0 else None,
            thumbnail_key=self.thumbnail_key[i],
        )

    def __iter__(self) -> Iterator[MapPoint]:
        return (self[i] for i in range(len(self)))

    @property
    def first_object(self) -> np.ndarray:
        """Each photo's most confident object (an index into ``labels``; -1: none)."""
        first = np.full(len(self), -1, np.int32)
        has = np.diff(self.object_start) > 0
        first[has] = self.object_codes[self.object_start[:-1][has]]
        return first

    @property
    def days(self) -> np.ndarray:
        """Each photo's day (UTC) as days since 1970-01-01 (int64)."""
        return self.created_at.astype("datetime64[D]").astype(np.int64)


def _utc_naive(moment: datetime) -> datetime:
    """A time as naive UTC (a time without a zone is UTC already)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class Embeddings:
    """One classifier's stored embeddings: analysis ids and L2-normalised float32 rows, oldest first, and the
    newest signature id read (an embedding stored later, or backfilled, has a newer one)."""

    analysis_ids: np.ndarray
    vectors: np.ndarray
    last_signature_id: int = 0


@dataclass(frozen=True)
class PlacedSince:
    """Photos placed on a fit after it was fitted, above a point id: their analysis ids and embeddings, and
    the newest point id read (of any fit), to ask from next time."""

    last_point_id: int
    analysis_ids: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class NeighbourPoint:
    """A placed photo asked about as a neighbour: its place on the fit and its embedding (L2-normalised)."""

    x: float
    y: float
    cluster: int
    vector: np.ndarray


def newest_classifier(session: Session) -> str | None:
    """The classifier of the newest stored embedding: the one whose map the History page shows."""
    return session.scalar(_newest_classifier())


def current_fit_id() -> ScalarSelect[int]:
    """The id of the map the History page shows (the newest classifier's newest finished fit), as a
    subquery: what History's uniqueness sort and filter join to. NULL when there is no map."""
    return (
        select(MapFitRow.id)
        .where(MapFitRow.classifier == _newest_classifier().scalar_subquery(), MapFitRow.status == "done")
        .order_by(MapFitRow.id.desc())
        .limit(1)
        .correlate(None)  # the same map whatever query it sits in
        .scalar_subquery()
    )


def _newest_classifier() -> Select[tuple[str | None]]:
    return (
        select(SignatureRow.embedding_model)
        .where(SignatureRow.embedding_model.is_not(None))
        .order_by(SignatureRow.id.desc())
        .limit(1)
    )


def embeddings(session: Session, classifier: str, analysis_ids: Sequence[int] | None = None) -> Embeddings:
    """The embeddings of ``classifier`` (of these analyses only, when given), streamed a few thousand at a time
    into one array sized by a count first (512 MB at 100,000 photos, and no more held on the way)."""
    wanted = [SignatureRow.embedding_model == classifier, SignatureRow.embedding.is_not(None)]
    if analysis_ids is not None:
        wanted.append(SignatureRow.analysis_id.in_(list(analysis_ids)))
    expected = session.scalar(select(func.count()).select_from(SignatureRow).where(*wanted)) or 0
    statement = (
        select(SignatureRow.analysis_id, SignatureRow.embedding, SignatureRow.id)
        .where(*wanted)
        .order_by(SignatureRow.analysis_id)
    )
    ids: list[int] = []
    vectors: np.ndarray | None = None
    last_signature_id = 0
    for partition in session.execute(statement.execution_options(yield_per=_READ_CHUNK)).partitions():
        for analysis_id, blob, signature_id in partition:
            vector = np.frombuffer(blob, EMBEDDING_DTYPE)
            if vectors is None:
                vectors = np.empty((expected, len(vector)), np.float32)
            # Left out: another size (a row of another version), or stored since the count (placed later).
            if len(vector) == vectors.shape[1] and len(ids) < len(vectors):
                vectors[len(ids)] = vector
                ids.append(analysis_id)
                last_signature_id = max(last_signature_id, signature_id)
    if vectors is None or not ids:
        return Embeddings(np.zeros(0, np.int64), np.zeros((0, 0 if vectors is None else vectors.shape[1]), np.float32))
    vectors = vectors[: len(ids)]
    for start in range(0, len(vectors), _READ_CHUNK):
        chunk = vectors[start : start + _READ_CHUNK]
        chunk /= np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-12)
    return Embeddings(np.asarray(ids, np.int64), vectors, last_signature_id)


def _normalised(rows: np.ndarray) -> np.ndarray:
    vectors = rows.astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def current_fit(session: Session, classifier: str) -> MapFit | None:
    """The classifier's map: its newest finished fit."""
    row = session.scalars(
        select(MapFitRow)
        .options(defer(MapFitRow.checkpoint))  # a finished fit's space: megabytes, read by fit_space only
        .where(MapFitRow.classifier == classifier, MapFitRow.status == "done")
        .order_by(MapFitRow.id.desc())
        .limit(1)
    ).first()
    return _fit(row) if row is not None else None


def fit_space(session: Session, fit_id: int) -> bytes | None:
    """What a finished fit keeps for placing new photos (``space.SpaceArrays``, packed); ``None`` for a fit
    finished before fits kept it. (An unfinished fit's ``checkpoint`` is its last stage instead.)"""
    return session.scalar(select(MapFitRow.checkpoint).where(MapFitRow.id == fit_id, MapFitRow.status == "done"))


def unfinished_fit(session: Session, classifier: str) -> MapFitRow | None:
    """The newest fit of ``classifier`` that stopped before it was done (to resume), if it is the newest fit."""
    row = session.scalars(
        select(MapFitRow).where(MapFitRow.classifier == classifier).order_by(MapFitRow.id.desc()).limit(1)
    ).first()
    return row if row is not None and row.status != "done" else None


def pack(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob)) as loaded:
        return {name: loaded[name] for name in loaded.files}


def write_points(session: Session, fit_id: int, rows: Iterable[dict[str, object]]) -> None:
    """Insert point rows (``analysis_id``, ``x``, ``y``, ``cluster``, ``uniqueness``, ``placed``) of a fit."""
    values = [{"fit_id": fit_id} | row for row in rows]
    if values:
        session.execute(insert(MapPointRow.__table__), values)


def written_ids(session: Session, fit_id: int) -> set[int]:
    return set(session.scalars(select(MapPointRow.analysis_id).where(MapPointRow.fit_id == fit_id)))


def existing_ids(session: Session, analysis_ids: Sequence[int]) -> set[int]:
    """Which of these analyses are still stored (a fit's photos may be deleted while it runs)."""
    found: set[int] = set()
    for start in range(0, len(analysis_ids), WRITE_CHUNK):
        chunk = [int(i) for i in analysis_ids[start : start + WRITE_CHUNK]]
        found |= set(session.scalars(select(AnalysisRow.id).where(AnalysisRow.id.in_(chunk))))
    return found


def finish_fit(session: Session, fit_id: int, classifier: str, space: bytes) -> None:
    """Make ``fit_id`` the classifier's map, keeping ``space`` (what placing new photos needs) in place of its
    checkpoint, and drop its earlier fits (their points go with them)."""
    session.execute(
        MapFitRow.__table__.update()
        .where(MapFitRow.id == fit_id)
        .values(status="done", checkpoint=space, finished_at=utc_now())
    )
    earlier = select(MapFitRow.id).where(MapFitRow.classifier == classifier, MapFitRow.id < fit_id)
    session.execute(delete(MapPointRow).where(MapPointRow.fit_id.in_(earlier)))
    session.execute(delete(MapFitRow).where(MapFitRow.classifier == classifier, MapFitRow.id < fit_id))


def unplaced(
    session: Session, fit: MapFit, limit: int, *, after_signature_id: int | None = None
) -> list[tuple[int, str]]:
    """Analyses with an embedding of the fit's classifier but no point on it yet: (id, md5), oldest first.

    ``after_signature_id``: the newest signature the fit read (its space keeps it). Only embeddings stored
    since can be waiting, so only they are looked at: a few rows instead of every photo (60 ms at 100,000).
    """
    statement = (
        select(AnalysisRow.id, AnalysisRow.md5)
        .join(SignatureRow, SignatureRow.analysis_id == AnalysisRow.id)
        .outerjoin(MapPointRow, and_(MapPointRow.analysis_id == AnalysisRow.id, MapPointRow.fit_id == fit.id))
        .where(MapPointRow.id.is_(None))
        .limit(limit)
    )
    if after_signature_id is None:
        statement = statement.where(SignatureRow.embedding_model == fit.classifier).order_by(AnalysisRow.id)
    else:
        # Compared as an expression, the classifier leaves SQLite the signature id range to walk (given the
        # column, it walks the classifier's index: every photo).
        statement = statement.where(
            SignatureRow.id > after_signature_id, SignatureRow.embedding_model.concat("") == fit.classifier
        ).order_by(SignatureRow.id)
    return [(row_id, md5) for row_id, md5 in session.execute(statement)]


def count_unplaced(session: Session, fit: MapFit) -> int:
    statement = (
        select(func.count())
        .select_from(SignatureRow)
        .outerjoin(MapPointRow, and_(MapPointRow.analysis_id == SignatureRow.analysis_id, MapPointRow.fit_id == fit.id))
        .where(SignatureRow.embedding_model == fit.classifier, MapPointRow.id.is_(None))
    )
    return session.scalar(statement) or 0


def count_without_embedding(session: Session, classifier: str | None) -> int:
    """Stored photos the map cannot place: no embedding (or one of another classifier)."""
    # A signature names its classifier only when it has an embedding (similar.signature.signature_of).
    with_one = select(SignatureRow.analysis_id).where(SignatureRow.embedding_model.is_not(None))
    if classifier is not None:
        with_one = with_one.where(SignatureRow.embedding_model == classifier)
    statement = select(func.count()).select_from(AnalysisRow).where(AnalysisRow.id.not_in(with_one))
    return session.scalar(statement) or 0


def placed_points(session: Session, fit_id: int, md5s: Sequence[str]) -> dict[str, tuple[float, float, int]]:
    """The coordinates and cluster of these photos on the fit, by md5 (those without a point are left out)."""
    if not md5s:
        return {}
    statement = (
        select(AnalysisRow.md5, MapPointRow.x, MapPointRow.y, MapPointRow.cluster)
        .join(MapPointRow, MapPointRow.analysis_id == AnalysisRow.id)
        .where(MapPointRow.fit_id == fit_id, MapPointRow.analysis_id.in_(ids_of(md5s)))
    )
    return {md5: (x, y, cluster) for md5, x, y, cluster in session.execute(statement)}


def placed_since(session: Session, fit: MapFit, after_point_id: int) -> PlacedSince:
    """The photos placed on ``fit`` after it was fitted whose points are newer than ``after_point_id``."""
    last_point_id = session.scalar(select(func.max(MapPointRow.id))) or 0
    statement = (
        select(MapPointRow.analysis_id)
        .where(
            MapPointRow.id > after_point_id,
            MapPointRow.id <= last_point_id,
            # As an expression, so that SQLite walks the (short) point id range rather than the fit's index.
            (MapPointRow.fit_id + 0) == fit.id,
            MapPointRow.placed == "nearest",
        )
        .order_by(MapPointRow.id)
    )
    ids = list(session.scalars(statement))
    found = embeddings(session, fit.classifier, ids) if ids else Embeddings(np.zeros(0, np.int64), np.zeros((0, 0)))
    return PlacedSince(max(last_point_id, after_point_id), found.analysis_ids, found.vectors)


def neighbour_points(session: Session, fit: MapFit, analysis_ids: Sequence[int]) -> dict[int, NeighbourPoint]:
    """The points on ``fit`` and embeddings of these analyses, by id (deleted ones are left out)."""
    if not analysis_ids:
        return {}
    statement = (
        select(MapPointRow.analysis_id, MapPointRow.x, MapPointRow.y, MapPointRow.cluster, SignatureRow.embedding)
        .join(SignatureRow, SignatureRow.analysis_id == MapPointRow.analysis_id)
        .where(
            MapPointRow.fit_id == fit.id,
            MapPointRow.analysis_id.in_([int(i) for i in analysis_ids]),
            SignatureRow.embedding_model == fit.classifier,
        )
    )
    rows = session.execute(statement).all()
    vectors = _decoded([row.embedding for row in rows])
    return {
        row.analysis_id: NeighbourPoint(float(row.x), float(row.y), int(row.cluster), vector)
        for row, vector in zip(rows, vectors, strict=True)
    }


def _decoded(blobs: Sequence[bytes]) -> np.ndarray:
    """Stored embeddings (of one classifier, so of one size) as L2-normalised float32 rows."""
    if not blobs:
        return np.zeros((0, 0), np.float32)
    return _normalised(np.vstack([np.frombuffer(blob, EMBEDDING_DTYPE) for blob in blobs]))


def ids_of(md5s: Sequence[str]) -> Select[tuple[int]]:
    """The analysis ids of these md5s, as a subquery to look points up by. (Given ``md5 IN (...)`` on the join
    instead, SQLite walks every point of the fit: 170 ms at 100,000 photos, against 0.5 ms.)"""
    return select(AnalysisRow.id).where(AnalysisRow.md5.in_(list(md5s)))


def points(session: Session, fit_id: int) -> MapPoints:
    """Every point of the fit with its photo's name, date, top class, objects, faces and first batch, as columns.

    Read as plain rows straight into arrays (no ORM object, no per-row type processing: the stored times are
    parsed in one go), in three queries: the points with their photos, the objects, the faces.
    """
    top_class = (
        select(ClassificationRow.analysis_id, ClassificationRow.label)
        .where(ClassificationRow.rank == 0)
        .subquery("top_class")
    )
    first_batch = (
        select(BatchItemRow.md5, func.min(BatchItemRow.job_id).label("job_id"))
        .where(BatchItemRow.status != "failed")
        .group_by(BatchItemRow.md5)
        .subquery("first_batch")
    )
    sqlite = session.get_bind().dialect.name == "sqlite"
    statement = (
        select(
            MapPointRow.analysis_id,
            AnalysisRow.md5,
            MapPointRow.x,
            MapPointRow.y,
            MapPointRow.cluster,
            MapPointRow.uniqueness,
            AnalysisRow.filename,
            _stored_time(sqlite),
            top_class.c.label,
            first_batch.c.job_id,
            AnalysisRow.thumbnail_key,
        )
        .join(MapPointRow, MapPointRow.analysis_id == AnalysisRow.id)
        .outerjoin(top_class, top_class.c.analysis_id == AnalysisRow.id)
        .outerjoin(first_batch, first_batch.c.md5 == AnalysisRow.md5)
        .where(MapPointRow.fit_id == fit_id)
        .order_by(MapPointRow.analysis_id)  # the (fit, photo) index's order: no sort
    )
    connection = session.connection()
    rows = _plain_rows(connection, statement)
    if not rows:
        return MapPoints.of(())
    ids, md5s, xs, ys, clusters, uniqueness, filenames, times, tops, batches, thumbnails = zip(*rows, strict=True)
    analysis_ids = np.array(ids, np.int64)
    labels: dict[str, int] = {}
    top = np.fromiter((-1 if t is None else labels.setdefault(t, len(labels)) for t in tops), np.int32, len(tops))
    # Every detection above the threshold, sorted here: ~3× faster than asking for the fit's, in order.
    detections = select(DetectionRow.analysis_id, DetectionRow.score, DetectionRow.label).where(
        DetectionRow.score >= DEFAULT_THRESHOLDS.min_detection_score
    )
    object_start, object_codes = _objects(analysis_ids, _plain_rows(connection, detections), labels)
    on_fit = select(MapPointRow.analysis_id).where(MapPointRow.fit_id == fit_id)
    faces = connection.scalars(
        select(FaceRow.analysis_id)
        .where(FaceRow.score >= DEFAULT_THRESHOLDS.min_face_score, FaceRow.analysis_id.in_(on_fit))
        .distinct()
    ).all()
    return MapPoints(
        md5=md5s,
        x=np.array(xs, np.float64),
        y=np.array(ys, np.float64),
        cluster=np.array(clusters, np.int64),
        uniqueness=np.array(uniqueness, np.float64),
        filename=filenames,
        created_at=_times(times),
        labels=tuple(labels),
        top_class=top,
        object_start=object_start,
        object_codes=object_codes,
        has_faces=np.isin(analysis_ids, np.array(faces, np.int64)),
        batch=np.fromiter((-1 if b is None else b for b in batches), np.int64, len(batches)),
        thumbnail_key=thumbnails,
    )


def _plain_rows(connection: Connection, statement: Select[Any]) -> list[tuple[Any, ...]]:
    """``statement``'s rows as the driver gives them: tuples, no SQLAlchemy row or type handling per row (which
    cost more than the query at 100,000 rows), so only for columns whose driver values need no conversion."""
    result = connection.execute(statement)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _stored_time(sqlite: bool) -> ColumnElement[Any]:
    """``created_at`` as the database keeps it, to parse in one go: SQLite's text (UTC); elsewhere the
    microseconds since 1970 (UTC)."""
    if sqlite:
        return type_coerce(AnalysisRow.created_at, String)
    return cast(extract("epoch", AnalysisRow.created_at) * 1_000_000, BigInteger)


def _times(values: Sequence[object]) -> np.ndarray:
    """:func:`_stored_time`'s values as ``datetime64[us]`` (UTC)."""
    if values and isinstance(values[0], str):
        return np.array(values, "datetime64[us]")
    return np.array(values, np.int64).astype("datetime64[us]")


def _objects(
    analysis_ids: np.ndarray, rows: Sequence[tuple[int, float, str]], labels: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Detections (photo, score, label) as each photo's distinct labels, most confident first, ragged:
    ``MapPoints.object_start`` and ``object_codes`` (``analysis_ids`` sorted; photos not among them are left
    out). ``labels`` gains the names it did not hold."""
    start = np.zeros(len(analysis_ids) + 1, np.int64)
    if not rows:
        return start, np.zeros(0, np.int32)
    ids, scores, names = zip(*rows, strict=True)
    photo = np.array(ids, np.int64)
    codes = np.fromiter((labels.setdefault(name, len(labels)) for name in names), np.int64, len(names))
    order = np.lexsort((-np.array(scores, np.float64), photo))  # by photo, most confident first
    photo, codes = photo[order], codes[order]
    owner = np.minimum(np.searchsorted(analysis_ids, photo), max(len(analysis_ids) - 1, 0))
    on_map = analysis_ids[owner] == photo if len(analysis_ids) else np.zeros(len(photo), bool)
    owner, codes = owner[on_map], codes[on_map]
    _, first = np.unique(owner * (len(labels) + 1) + codes, return_index=True)  # a label once per photo
    keep = np.sort(first)
    owner, codes = owner[keep], codes[keep]
    np.cumsum(np.bincount(owner, minlength=len(analysis_ids)), out=start[1:])
    return start, codes.astype(np.int32)


def top_classes(session: Session, analysis_ids: Sequence[int]) -> dict[int, str]:
    """The top class of each of these analyses (for naming clusters)."""
    found: dict[int, str] = {}
    for start in range(0, len(analysis_ids), WRITE_CHUNK):
        chunk = [int(i) for i in analysis_ids[start : start + WRITE_CHUNK]]
        statement = select(ClassificationRow.analysis_id, ClassificationRow.label).where(
            ClassificationRow.rank == 0, ClassificationRow.analysis_id.in_(chunk)
        )
        found.update(dict(session.execute(statement).all()))
    return found


def _fit(row: MapFitRow) -> MapFit:
    return MapFit(
        id=row.id,
        classifier=row.classifier,
        method=row.method,
        status=row.status,
        photos=row.photos,
        clusters=tuple(Cluster(int(c["cluster"]), str(c["label"]), int(c["count"])) for c in row.clusters),
        started_at=row.started_at,
        finished_at=row.finished_at,
    )
