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
from dataclasses import replace
from typing import Any, Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from picmetric_core.config import Settings
from picmetric_core.errors import StoreUnavailable
from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.history import HistoryPage, HistoryQuery, LabelKind
from picmetric_core.intake.images import DecodedImage, thumbnail_jpeg
from picmetric_core.intake.incoming import Incoming
from picmetric_core.intake.names import clean_filename
from picmetric_core.pipeline import StageCallback
from picmetric_core.results import Analysis
from picmetric_core.similar.index import NearDuplicate, SimilarityIndex
from picmetric_core.similar.pgvector import PgVectorIndex, pgvector_index
from picmetric_core.similar.signature import signature_of
from picmetric_core.store import history
from picmetric_core.store.database import create_database_engine, database_errors, session_factory, upgrade_schema
from picmetric_core.store.history import LabelCount, TimeCount
from picmetric_core.store.objects import ObjectKeys, ObjectNotFound, ObjectStore, analysis_key, open_store
from picmetric_core.store.orm import analysis_row, utc_now
from picmetric_core.submission import ObjectUrls, SimilarPhoto, Submission
from picmetric_core.views import to_json

log = logging.getLogger(__name__)

SOURCES = ("upload", "url")
# How many of the most similar photos the History filter "similar to <md5>" lists.
SIMILAR_FILTER_SIZE = 48


class Analyzer(Protocol):
    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis: ...


class RenderedOverlays(Protocol):
    detections_png: bytes
    faces_png: bytes


RenderOverlays = Callable[[DecodedImage, Analysis], RenderedOverlays]


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
        self._similarity = self._similarity_index()

    @property
    def similarity_backend(self) -> str:
        """Where "more like this" searches: ``"pgvector"`` or ``"memory"``."""
        return "pgvector" if isinstance(self._similarity, PgVectorIndex) else "memory"

    def _similarity_index(self) -> SimilarityIndex:
        if self.settings.similar_index == "auto":
            with database_errors(self.engine):
                found = pgvector_index(self.engine, self._sessions)
            if found is not None:
                return found
        return SimilarityIndex(self._sessions)

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
        return self._store(image, self.analyzer.analyze, source, filename, source_url, on_stage)

    def submit_incoming(self, incoming: Incoming, *, on_stage: StageCallback | None = None) -> Submission:
        """:meth:`submit` an image from :func:`~picmetric_core.intake.intake`, with its name and source."""
        return self.submit(
            incoming.image,
            source=incoming.source,
            filename=incoming.filename,
            source_url=incoming.source_url,
            on_stage=on_stage,
        )

    def store_analysis(
        self,
        image: DecodedImage,
        analysis: Analysis,
        *,
        source: Literal["upload", "url"] = "upload",
        filename: str | None = None,
        source_url: str | None = None,
    ) -> Submission:
        """Store an analysis the networks made elsewhere (a batch actor) exactly as :meth:`submit` would.

        Same write order and md5 dedup: an image stored already returns its stored analysis
        (``seen_before``) and ``analysis`` is dropped.

        Raises:
            StoreUnavailable: the objects could not be written; nothing was saved.
            DatabaseUnavailable: the database could not be reached; a retry reuses what was stored.
        """
        if analysis.md5 != image.md5:
            raise ValueError(f"the analysis is of {analysis.md5}, not of the image {image.md5}")
        return self._store(image, lambda _image, on_stage=None: analysis, source, filename, source_url, None)

    def _store(
        self,
        image: DecodedImage,
        analyze: Callable[..., Analysis],
        source: str,
        filename: str | None,
        source_url: str | None,
        on_stage: StageCallback | None,
    ) -> Submission:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
        known = self._stored(image.md5)
        if known is not None:
            return self._with_near_duplicates(known)
        with self._locks.holding(image.md5):
            known = self._stored(image.md5)  # another thread may have finished it while we waited
            if known is not None:
                return self._with_near_duplicates(known)
            if self.settings.skip_near_duplicates and (earlier := self._near_duplicate_instead(image)):
                return earlier
            keys = ObjectKeys.for_image(image.md5, image.content_type)
            report = on_stage or _ignore_stage
            analysis = self._store_objects(image, keys, analyze, report)
            if analysis.signature is None:  # left by an earlier try: the hash now, the embedding by backfill
                analysis = replace(analysis, signature=signature_of(image.rgb, None, None, phash=image.phash))
            near = self._near_duplicates_of_new(analysis)
            report("saving")
            submission = self._insert(
                image,
                analysis,
                keys,
                source=source,
                filename=clean_filename(filename),
                source_url=source_url,
            )
            return replace(submission, near_duplicates=near) if not submission.seen_before else submission

    def get(self, md5: str) -> Submission | None:
        """The stored analysis of the image with this md5, or ``None`` when it was never submitted."""
        return self._stored(md5)

    def near_duplicates(self, md5: str) -> list[NearDuplicate] | None:
        """Stored photos that are the same picture as the stored photo ``md5``, closest first.

        Returns ``None`` when ``md5`` has no signature (never analysed, or not backfilled yet).
        """
        with database_errors(self.engine):
            return self._similarity.near_duplicates_of(md5)

    def similar(self, md5: str, k: int = 12) -> list[SimilarPhoto] | None:
        """The ``k`` stored photos most like the stored photo ``md5`` in content ("more like this").

        Returns ``None`` when ``md5`` has no embedding (never analysed, or not backfilled yet).
        """
        with database_errors(self.engine):
            neighbours = self._similarity.similar(md5, k)
        if not neighbours:
            return neighbours
        query = HistoryQuery(md5_in=tuple(n.md5 for n in neighbours), limit=len(neighbours))
        with database_errors(self.engine), self._sessions() as session:
            stored = {item.record.md5: item for item in history.search(session, query).items}
        return [
            SimilarPhoto(self._submission(stored[n.md5], seen_before=True), n.similarity)
            for n in neighbours
            if n.md5 in stored
        ]

    def history(self, query: HistoryQuery) -> HistoryPage[Submission]:
        """One page of past analyses matching ``query``, newest first, with links to their objects."""
        query = self._resolved(query)
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
        query = self._resolved(query) if query is not None else None
        with database_errors(self.engine), self._sessions() as session:
            return history.label_frequencies(session, kind, min_score=min_score, query=query, limit=limit)

    def counts_over_time(
        self, query: HistoryQuery | None = None, bucket: Literal["day", "month"] = "day"
    ) -> list[TimeCount]:
        """Analyses per UTC day or month, oldest first (see :func:`history.counts_over_time`)."""
        query = self._resolved(query) if query is not None else None
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

    def read_object(self, key: str) -> bytes:
        """The bytes of one stored object (an original, overlay, thumbnail) by its key.

        Raises:
            ObjectNotFound: no object has this key.
            StoreUnavailable: the store could not be reached.
        """
        return self.store.get(key)

    def object_link(self, key: str) -> str | None:
        """A link to one stored object: presigned (expiring) or public on S3, ``None`` for a local store."""
        return self.store.url(key)

    def _resolved(self, query: HistoryQuery) -> HistoryQuery:
        """``query`` with its "similar to" filter turned into the md5s of the most similar photos."""
        if query.similar_to is None:
            return query
        with database_errors(self.engine):
            neighbours = self._similarity.similar(query.similar_to, SIMILAR_FILTER_SIZE) or []
        return replace(query, md5_in=tuple(n.md5 for n in neighbours))

    def _with_near_duplicates(self, known: Submission) -> Submission:
        found = self.near_duplicates(known.record.md5)
        return replace(known, near_duplicates=tuple(found)) if found else known

    def _near_duplicates_of_new(self, analysis: Analysis) -> tuple[NearDuplicate, ...]:
        signature = analysis.signature
        assert signature is not None
        with database_errors(self.engine):
            found = self._similarity.near_duplicates(
                signature.phash, signature.embedding, signature.embedding_model, exclude=analysis.md5
            )
        if found:
            log.info("%s is a near-duplicate of %s", analysis.md5, ", ".join(d.md5 for d in found))
        return tuple(found)

    def _near_duplicate_instead(self, image: DecodedImage) -> Submission | None:
        """The stored analysis of a near-duplicate of ``image`` (by its hash alone: no network runs)."""
        with database_errors(self.engine):
            found = self._similarity.near_duplicates(image.phash, exclude=image.md5)
        earlier = self._stored(found[0].md5) if found else None
        if earlier is None:
            return None
        log.info("skipped %s, a near-duplicate of %s", image.md5, earlier.record.md5)
        return replace(earlier, near_duplicates=tuple(found))

    def _stored(self, md5: str) -> Submission | None:
        with database_errors(self.engine), self._sessions() as session:
            stored = history.get_by_md5(session, md5)
        return self._submission(stored, seen_before=True) if stored is not None else None

    def _submission(self, stored: history.StoredAnalysis, *, seen_before: bool) -> Submission:
        return Submission(stored.record, stored.analysis, seen_before, self.urls(stored.record.keys))

    def _store_objects(
        self, image: DecodedImage, keys: ObjectKeys, analyze: Callable[..., Analysis], on_stage: StageCallback
    ) -> Analysis:
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
            analysis = analyze(image, on_stage=on_stage)
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
    return to_json(analysis.to_record()).encode()


def analyze_unstored(settings: Settings, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis:
    """What the networks find in ``image``, stored nowhere: the CLI's way in.

    ``picmetric analyze`` prints results (and writes files with ``--out``) without a history, so it
    needs neither the database nor the object store that :class:`PicMetricService` opens.
    """
    from picmetric_core.pipeline import get_analyzer

    return get_analyzer(settings).analyze(image, on_stage=on_stage)


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
