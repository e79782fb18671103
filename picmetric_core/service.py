"""The one way in for the UI, the API and the CLI: submit an image, read what is stored.

Write order ("nothing lost"):

1. The md5 is looked up first: an image seen before returns its stored analysis at once, before
   any upload or network runs.
2. Objects go to the store (content-addressed, so writing them again is harmless): original and
   thumbnail, then, after the networks ran, both overlays, and last the analysis as JSON.
3. The rows go to the database in one transaction.

A store failure stops before any row is written. A database failure after step 2 leaves complete
objects behind, and the next try of the same image reuses them, the analysis included. So a row
never points at a missing object, and the networks run once per image.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from picmetric_core.config import Settings
from picmetric_core.errors import StoreUnavailable
from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.intake.images import DecodedImage, thumbnail_jpeg
from picmetric_core.pipeline import StageCallback
from picmetric_core.results import Analysis
from picmetric_core.store import history
from picmetric_core.store.database import create_database_engine, database_errors, session_factory, upgrade_schema
from picmetric_core.store.history import AnalysisRecord, HistoryPage, HistoryQuery, LabelCount, LabelKind, TimeCount
from picmetric_core.store.objects import ObjectKeys, ObjectNotFound, ObjectStore, analysis_key, open_store
from picmetric_core.store.orm import analysis_row, utc_now

log = logging.getLogger(__name__)

SOURCES = ("upload", "url")


class Analyzer(Protocol):
    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis: ...


class RenderedOverlays(Protocol):
    detections_png: bytes
    faces_png: bytes


RenderOverlays = Callable[[DecodedImage, Analysis], RenderedOverlays]


@dataclass(frozen=True)
class ObjectUrls:
    """Links to an image's objects: presigned (expiring) or public S3 URLs, ``None`` for a local store."""

    original: str | None
    detections: str | None
    faces: str | None
    thumbnail: str | None


@dataclass(frozen=True)
class Submission:
    """A stored analysis with links to its objects.

    Attributes:
        record: Where the image came from and where its objects are.
        analysis: What the networks found.
        seen_before: ``True`` when the image was already stored and no network ran for this call.
        urls: Links to the original, both overlays and the thumbnail.
    """

    record: AnalysisRecord
    analysis: Analysis
    seen_before: bool
    urls: ObjectUrls


class PicMetricService:
    """Analyses images once, keeps their objects and rows, and answers history questions.

    Thread-safe: one instance serves every session of the app. Creating it upgrades the schema.

    Example:
        >>> service = PicMetricService(settings, get_analyzer(settings))
        >>> first = service.submit(decode_for(settings, photo), filename="dog.jpg")
        >>> service.submit(decode_for(settings, photo)).seen_before
        True
    """

    def __init__(
        self,
        settings: Settings,
        analyzer: Analyzer,
        store: ObjectStore | None = None,
        engine: Engine | None = None,
        *,
        render: RenderOverlays | None = None,
    ) -> None:
        self.settings = settings
        self.analyzer = analyzer
        self.store = store if store is not None else open_store(settings)
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else create_database_engine(settings)
        self._render = render
        self._sessions = session_factory(self.engine)
        self._locks = _KeyedLocks()
        upgrade_schema(self.engine)

    def close(self) -> None:
        """Close the database connections this service opened."""
        if self._owns_engine:
            self.engine.dispose()

    def submit(
        self,
        image: DecodedImage,
        *,
        source: Literal["upload", "url"] = "upload",
        filename: str | None = None,
        source_url: str | None = None,
        on_stage: StageCallback | None = None,
    ) -> Submission:
        """Analyse ``image`` and store everything, or return what is stored for it already.

        ``on_stage`` is told each step as it starts: "storing", the networks' names, "overlays", "saving";
        and ``"<network> done"`` as each network finishes.

        Concurrent calls with the same image run the networks once and write one row.

        Raises:
            StoreUnavailable: the objects could not be written; nothing was saved.
            DatabaseUnavailable: the database could not be reached; a retry reuses what was stored.
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        known = self._stored(image.md5)
        if known is not None:
            return known
        with self._locks.holding(image.md5):
            known = self._stored(image.md5)  # another thread may have finished it while we waited
            if known is not None:
                return known
            keys = ObjectKeys.for_image(image.md5, image.content_type)
            report = on_stage or _ignore_stage
            analysis = self._store_objects(image, keys, report)
            report("saving")
            return self._insert(
                image,
                analysis,
                keys,
                source=source,
                filename=filename[:255] if filename else None,
                source_url=source_url,
            )

    def get(self, md5: str) -> Submission | None:
        """The stored analysis of the image with this md5, or ``None`` when it was never submitted."""
        return self._stored(md5)

    def history(self, query: HistoryQuery) -> HistoryPage[Submission]:
        """One page of past analyses matching ``query``, newest first, with links to their objects."""
        with database_errors(self.engine), self._sessions() as session:
            page = history.search(session, query)
        return replace(page, items=tuple(self._submission(item, seen_before=True) for item in page.items))

    def count(self, query: HistoryQuery) -> int:
        """How many past analyses match ``query``'s filters (see :func:`history.count`)."""
        with database_errors(self.engine), self._sessions() as session:
            return history.count(session, query)

    def label_frequencies(
        self,
        kind: LabelKind = "detector",
        *,
        min_score: float = DEFAULT_THRESHOLDS.min_detection_score,
        query: HistoryQuery | None = None,
        limit: int = 20,
    ) -> list[LabelCount]:
        """How many analyses found each label, most frequent first (see :func:`history.label_frequencies`)."""
        with database_errors(self.engine), self._sessions() as session:
            return history.label_frequencies(session, kind, min_score=min_score, query=query, limit=limit)

    def counts_over_time(
        self, query: HistoryQuery | None = None, bucket: Literal["day", "month"] = "day"
    ) -> list[TimeCount]:
        """Analyses per UTC day or month, oldest first (see :func:`history.counts_over_time`)."""
        with database_errors(self.engine), self._sessions() as session:
            return history.counts_over_time(session, query, bucket)

    def urls(self, keys: ObjectKeys) -> ObjectUrls:
        """Links to an image's objects (presigned ones expire after ``PICMETRIC_PRESIGN_EXPIRY_S``)."""
        return ObjectUrls(
            original=self.store.url(keys.original),
            detections=self.store.url(keys.detections),
            faces=self.store.url(keys.faces),
            thumbnail=self.store.url(keys.thumbnail),
        )

    def _stored(self, md5: str) -> Submission | None:
        with database_errors(self.engine), self._sessions() as session:
            stored = history.get_by_md5(session, md5)
        return self._submission(stored, seen_before=True) if stored is not None else None

    def _submission(self, stored: history.StoredAnalysis, *, seen_before: bool) -> Submission:
        return Submission(stored.record, stored.analysis, seen_before, self.urls(stored.record.keys))

    def _store_objects(self, image: DecodedImage, keys: ObjectKeys, on_stage: StageCallback) -> Analysis:
        """Write every object of ``image`` and return its analysis, reusing a complete earlier write."""
        try:
            earlier = self._analysis_left_by_earlier_try(image.md5)
            if earlier is not None:
                log.info("reusing the stored objects and analysis of %s", image.md5)
                return earlier
            # Original first: a store that is down fails here, before minutes of inference.
            on_stage("storing")
            self.store.put(keys.original, image.data, image.content_type)
            self.store.put(keys.thumbnail, thumbnail_jpeg(image.rgb), "image/jpeg")
            analysis = self.analyzer.analyze(image, on_stage=on_stage)
            on_stage("overlays")
            overlays = self._renderer()(image, analysis)
            self.store.put(keys.detections, overlays.detections_png, "image/png")
            self.store.put(keys.faces, overlays.faces_png, "image/png")
            self.store.put(analysis_key(image.md5), _analysis_json(analysis), "application/json")
            return analysis
        except StoreUnavailable as error:
            raise StoreUnavailable(f"{error} The image was not saved; try again.") from error

    def _analysis_left_by_earlier_try(self, md5: str) -> Analysis | None:
        try:
            data = self.store.get(analysis_key(md5))
        except ObjectNotFound:
            return None
        try:
            analysis = Analysis.from_dict(json.loads(data))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable %s", analysis_key(md5))
            return None
        return analysis if analysis.md5 == md5 else None

    def _insert(self, image: DecodedImage, analysis: Analysis, keys: ObjectKeys, **columns: Any) -> Submission:
        row = analysis_row(
            analysis,
            created_at=utc_now(),
            content_type=image.content_type,
            byte_size=image.byte_size,
            original_key=keys.original,
            detections_key=keys.detections,
            faces_key=keys.faces,
            thumbnail_key=keys.thumbnail,
            **columns,
        )
        try:
            with database_errors(self.engine), self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            # Another process stored the same image between our check and our insert.
            known = self._stored(image.md5)
            if known is None:
                raise
            return known
        log.info("stored analysis of %s (%s)", image.md5, columns["source"])
        return self._submission(history.stored_analysis(row), seen_before=False)

    def _renderer(self) -> RenderOverlays:
        if self._render is None:
            from picmetric_core.overlays import render_overlays

            self._render = render_overlays
        return self._render


def _ignore_stage(_stage: str) -> None:
    pass


def _analysis_json(analysis: Analysis) -> bytes:
    return json.dumps(analysis.to_dict(), default=_plain, separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    """numpy scalars (which networks hand back) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class _KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def holding(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[key]
