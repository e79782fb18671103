"""The tables: one row per analysed image, and its classifications, detections and faces.

The schema itself is created and changed only by the Alembic migrations in
``picmetric_core/migrations``; these classes must match them (a test compares the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    insert,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from picmetric_core.results import Analysis, Box, Classification, Detection, Face, ModelInfo, Point, Signature

# Stable constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT ids on Postgres; SQLite only auto-increments a column declared INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")
# Byte-wise ordering, so an md5 prefix filter can use the unique index as a range.
Md5 = String(32).with_variant(String(32, collation="C"), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp on every database, always read back in UTC.

    Postgres keeps ``timestamptz``; SQLite has no time zones, so values are stored as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous: give a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AnalysisRow(Base):
    """One analysed image: where it came from, what ran, and where its objects are stored."""

    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    md5: Mapped[str] = mapped_column(Md5, unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    source: Mapped[str] = mapped_column(String(16))
    source_url: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    timings_ms: Mapped[dict[str, float]] = mapped_column(JSON)
    original_key: Mapped[str] = mapped_column(String(255))
    detections_key: Mapped[str] = mapped_column(String(255))
    faces_key: Mapped[str] = mapped_column(String(255))
    thumbnail_key: Mapped[str] = mapped_column(String(255))

    classifications: Mapped[list[ClassificationRow]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", order_by="ClassificationRow.rank"
    )
    detections: Mapped[list[DetectionRow]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", order_by="DetectionRow.id"
    )
    faces: Mapped[list[FaceRow]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", order_by="FaceRow.id"
    )
    signature: Mapped[SignatureRow | None] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        CheckConstraint("source IN ('upload', 'url', 'live')", name="source"),
        # Newest first, with the id breaking ties: the order of every history page.
        Index("ix_analyses_created_at_id", "created_at", "id"),
    )

    def to_analysis(self) -> Analysis:
        """The typed :class:`Analysis` these rows hold."""
        return Analysis(
            md5=self.md5,
            width=self.width,
            height=self.height,
            classifications=tuple(
                Classification(label=c.label, class_id=c.class_id, score=c.score) for c in self.classifications
            ),
            detections=tuple(
                Detection(label=d.label, class_id=d.class_id, score=d.score, box=d.box) for d in self.detections
            ),
            faces=tuple(
                Face(score=f.score, box=f.box, landmarks={k: Point(**p) for k, p in f.landmarks.items()})
                for f in self.faces
            ),
            models=tuple(ModelInfo(**m) for m in self.models),
            timings_ms=dict(self.timings_ms),
        )


class _BoxColumns:
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)

    @property
    def box(self) -> Box:
        return Box(self.x1, self.y1, self.x2, self.y2)


class ClassificationRow(Base):
    """One of the classifier's top-k ImageNet classes; ``rank`` 0 is the best."""

    __tablename__ = "classifications"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(100))
    class_id: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)

    analysis: Mapped[AnalysisRow] = relationship(back_populates="classifications")

    __table_args__ = (
        Index("ix_classifications_analysis_id", "analysis_id"),
        # Covers "which analyses have this label" and label counts without touching the table.
        Index("ix_classifications_label_analysis_id_score", "label", "analysis_id", "score"),
    )


class DetectionRow(_BoxColumns, Base):
    """One COCO object the detector found, with its own box."""

    __tablename__ = "detections"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(100))
    class_id: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)

    analysis: Mapped[AnalysisRow] = relationship(back_populates="detections")

    __table_args__ = (
        Index("ix_detections_analysis_id", "analysis_id"),
        Index("ix_detections_label_analysis_id_score", "label", "analysis_id", "score"),
    )


class FaceRow(_BoxColumns, Base):
    """One face with its box and five landmarks (``{"left_eye": {"x": .., "y": ..}, ...}``)."""

    __tablename__ = "faces"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    landmarks: Mapped[dict[str, dict[str, float]]] = mapped_column(JSON)

    analysis: Mapped[AnalysisRow] = relationship(back_populates="faces")

    __table_args__ = (Index("ix_faces_analysis_id", "analysis_id"),)


class SignatureRow(Base):
    """An analysis's perceptual hash and embedding (see :mod:`picmetric_core.similar`).

    ``id`` grows with every new row, so an in-process index catches up by reading the ids above the
    last it holds.
    """

    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"), unique=True)
    phash: Mapped[int] = mapped_column(BigInteger)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(100))

    analysis: Mapped[AnalysisRow] = relationship(back_populates="signature")

    # The History map's "which photos of this classifier" without reading the embeddings (migration 0010).
    __table_args__ = (Index("ix_signatures_embedding_model_analysis_id", "embedding_model", "analysis_id"),)


def signature_row(signature: Signature) -> SignatureRow:
    return SignatureRow(
        phash=signature.phash, embedding=signature.embedding, embedding_model=signature.embedding_model
    )


def analysis_row(analysis: Analysis, **columns: Any) -> AnalysisRow:
    """New rows for ``analysis``; ``columns`` are the image's other columns (source, keys, ...)."""
    if analysis.signature is not None:
        columns.setdefault("signature", signature_row(analysis.signature))
    return AnalysisRow(
        md5=analysis.md5,
        width=analysis.width,
        height=analysis.height,
        models=[asdict(m) for m in analysis.models],
        timings_ms={name: float(ms) for name, ms in analysis.timings_ms.items()},
        classifications=[
            ClassificationRow(rank=rank, label=c.label, class_id=int(c.class_id), score=float(c.score))
            for rank, c in enumerate(analysis.classifications)
        ],
        detections=[
            DetectionRow(label=d.label, class_id=int(d.class_id), score=float(d.score), **_box(d.box))
            for d in analysis.detections
        ],
        faces=[
            FaceRow(
                score=float(f.score),
                landmarks={name: {"x": float(p.x), "y": float(p.y)} for name, p in f.landmarks.items()},
                **_box(f.box),
            )
            for f in analysis.faces
        ],
        **columns,
    )


_CHILDREN: tuple[tuple[str, type[Base], tuple[str, ...]], ...] = (
    ("classifications", ClassificationRow, ("rank", "label", "class_id", "score")),
    ("detections", DetectionRow, ("label", "class_id", "score", "x1", "y1", "x2", "y2")),
    ("faces", FaceRow, ("score", "x1", "y1", "x2", "y2", "landmarks")),
)


def insert_analyses(session: Session, rows: Sequence[AnalysisRow]) -> None:
    """Insert :func:`analysis_row` rows (md5s distinct) and their children, one statement per table.

    The rows stay out of the session, their ids set: about 3× faster than the unit of work's flush of the
    same objects (0.8 against 2.5 ms for one analysis of ~30 rows here), and a batch block's rows go in
    the same few statements. Raises what the database raises (``IntegrityError`` for a stored md5).
    """
    if not rows:
        return
    table = AnalysisRow.__table__
    columns = [column.key for column in table.columns if column.key != "id"]
    returned = session.execute(
        insert(table).returning(table.c.id, table.c.md5), [{key: getattr(row, key) for key in columns} for row in rows]
    )
    ids = {md5: row_id for row_id, md5 in returned}
    for row in rows:
        row.id = ids[row.md5]
    for relation, child, fields in _CHILDREN:
        values = [
            {"analysis_id": row.id} | {field: getattr(item, field) for field in fields}
            for row in rows
            for item in getattr(row, relation)
        ]
        if values:
            session.execute(insert(child.__table__), values)
    signatures = [
        {"analysis_id": row.id, "phash": s.phash, "embedding": s.embedding, "embedding_model": s.embedding_model}
        for row in rows
        if (s := row.signature) is not None
    ]
    if signatures:
        session.execute(insert(SignatureRow.__table__), signatures)


def _box(box: Box) -> dict[str, float]:
    # float(): networks hand back numpy scalars, which database drivers and JSON do not take.
    return {"x1": float(box.x1), "y1": float(box.y1), "x2": float(box.x2), "y2": float(box.y2)}


class BatchJobRow(Base):
    """One batch run over a list of sources (folders, globs, URL lists, S3 prefixes)."""

    __tablename__ = "batch_jobs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    sources: Mapped[list[str]] = mapped_column(JSON)
    # sha256 of the sorted sources: re-running the same sources finds the job to resume.
    sources_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer, default=0)
    new: Mapped[int] = mapped_column(Integer, default=0)
    seen: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Written every few seconds by whatever runs or queues the job; a running job without one for a
    # while has lost its driver (see batch.jobs.STALE_AFTER_S).
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    images_per_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'done', 'failed')", name="status"),
        Index("ix_batch_jobs_sources_key", "sources_key"),
    )


class BatchItemRow(Base):
    """One source item of a job, written once when it is done: stored new, seen before, or failed."""

    __tablename__ = "batch_items"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("batch_jobs.id", ondelete="CASCADE"))
    item: Mapped[str] = mapped_column(Text)
    md5: Mapped[str | None] = mapped_column(Md5)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(64))
    # Stored new, and a near-duplicate of a photo stored before it (counted in the job's summary).
    near_duplicate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)

    __table_args__ = (
        CheckConstraint("status IN ('new', 'seen', 'failed')", name="status"),
        # One record per item and job: a resumed or raced write of the same item is a no-op.
        UniqueConstraint("job_id", "item", name="uq_batch_items_job_id_item"),
        # History's batch filter: "analyses whose md5 this job stored or saw".
        Index("ix_batch_items_job_id_md5", "job_id", "md5"),
        # A delete unlinks the items of its md5s, in every job.
        Index("ix_batch_items_md5", "md5"),
    )


class DeletionRow(Base):
    """One deleted analysis, written in the transaction that deletes its rows.

    Every process's in-process similarity index reads the rows with an id above the last it read and
    forgets ``signature_id`` (ids only grow, and rows are written in id order). ``md5`` and
    ``object_keys`` are kept only while objects of the photo are still in the store: a delete whose
    store failed is finished by the next delete command (or the next upload of the same photo), and
    then both are cleared, so nothing here names the photo once it is gone.
    """

    __tablename__ = "deletions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    signature_id: Mapped[int | None] = mapped_column(BigInteger)
    md5: Mapped[str | None] = mapped_column(Md5)
    object_keys: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    objects_deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_deletions_md5", "md5"),)


class MapFitRow(Base):
    """One fit of the History map to a classifier's embeddings (see :mod:`picmetric_core.map`).

    The newest fit of a classifier whose ``status`` is ``done`` is its map. ``checkpoint`` holds what an
    unfinished fit computed so far (its neighbours, then its layout), so a rerun resumes from there; once
    done, what placing new photos needs of it (its reduced space: ``picmetric_core.map.space``). Megabytes:
    read it only where needed.
    ``clusters``: ``[{"cluster": 0, "label": "dog", "count": 143}, ...]``.
    """

    __tablename__ = "map_fits"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    classifier: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    photos: Mapped[int] = mapped_column(Integer)
    clusters: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    __table_args__ = (
        CheckConstraint("method IN ('umap', 'pca')", name="method"),
        CheckConstraint("status IN ('neighbours', 'laid_out', 'done')", name="status"),
        Index("ix_map_fits_classifier_id", "classifier", "id"),
    )


class MapPointRow(Base):
    """A photo's place on a fit: coordinates, cluster (-1: none) and uniqueness (0 to 1).

    ``placed`` says how: ``fit`` by the fit itself, ``nearest`` later, from its nearest placed neighbours.
    """

    __tablename__ = "map_points"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    fit_id: Mapped[int] = mapped_column(ForeignKey("map_fits.id", ondelete="CASCADE"))
    analysis_id: Mapped[int] = mapped_column(ForeignKey("analyses.id", ondelete="CASCADE"))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    cluster: Mapped[int] = mapped_column(Integer)
    uniqueness: Mapped[float] = mapped_column(Float)
    placed: Mapped[str] = mapped_column(String(8))

    __table_args__ = (
        UniqueConstraint("fit_id", "analysis_id", name="uq_map_points_fit_id_analysis_id"),
        CheckConstraint("placed IN ('fit', 'nearest')", name="placed"),
        Index("ix_map_points_analysis_id", "analysis_id"),
    )


class VideoRow(Base):
    """One analysed clip (issue #23): what it is, what was asked (sampling rate, counting line), the line's
    crossings and counts, and where its objects are. Its per-frame results are in the store (``tracks_key``)."""

    __tablename__ = "videos"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    md5: Mapped[str] = mapped_column(Md5, unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utc_now)
    source: Mapped[str] = mapped_column(String(16))
    source_url: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(String(255))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    container: Mapped[str] = mapped_column(String(32))
    codec: Mapped[str] = mapped_column(String(32))
    duration_s: Mapped[float] = mapped_column(Float)
    fps: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    frame_count: Mapped[int | None] = mapped_column(Integer)
    has_audio: Mapped[bool] = mapped_column(Boolean)
    sample_fps: Mapped[float] = mapped_column(Float)
    line: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    crossings: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    counts: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    models: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)
    original_key: Mapped[str] = mapped_column(String(255))
    annotated_key: Mapped[str | None] = mapped_column(String(255))
    poster_key: Mapped[str] = mapped_column(String(255))
    tracks_key: Mapped[str] = mapped_column(String(255))

    tracks: Mapped[list[VideoTrackRow]] = relationship(
        back_populates="video", cascade="all, delete-orphan", order_by="VideoTrackRow.track_id"
    )

    __table_args__ = (
        CheckConstraint("source IN ('upload', 'url', 'batch')", name="source"),
        Index("ix_videos_created_at_id", "created_at", "id"),
    )


class VideoTrackRow(_BoxColumns, Base):
    """One tracked object or face of a clip: its class, when it was seen, its best sighting and crop."""

    __tablename__ = "video_tracks"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"))
    track_id: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(100))
    class_id: Mapped[int] = mapped_column(Integer)
    first_seen_s: Mapped[float] = mapped_column(Float)
    last_seen_s: Mapped[float] = mapped_column(Float)
    best_score: Mapped[float] = mapped_column(Float)
    best_time_s: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer)
    crop_key: Mapped[str | None] = mapped_column(String(255))

    video: Mapped[VideoRow] = relationship(back_populates="tracks")

    __table_args__ = (
        Index("ix_video_tracks_video_id", "video_id"),
        Index("ix_video_tracks_label_video_id", "label", "video_id"),
    )
