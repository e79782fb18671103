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

Deleting goes the other way round (rows, then objects: :mod:`picmetric_core.store.deletions`). Storing
and deleting one md5 hold the same lock in every process (:mod:`picmetric_core.store.locks`), and an
upload first removes what an unfinished delete of the same photo left, so neither sees half of the other.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
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
from picmetric_core.store import deletions, history
from picmetric_core.store.database import create_database_engine, database_errors, session_factory, upgrade_schema
from picmetric_core.store.deletions import DeleteResult, PendingObjects
from picmetric_core.store.history import LabelCount, TimeCount
from picmetric_core.store.locks import Md5Locks
from picmetric_core.store.objects import ObjectKeys, ObjectNotFound, ObjectStore, analysis_key, open_store
from picmetric_core.store.orm import analysis_row, utc_now
from picmetric_core.submission import ObjectUrls, SimilarPhoto, Submission
from picmetric_core.views import to_json

log = logging.getLogger(__name__)

SOURCES = ("upload", "url")
# How many of the most similar photos the History filter "similar to <md5>" lists.
SIMILAR_FILTER_SIZE = 48
# Analyses deleted in one transaction, under one lock: their objects (5 each) fit one S3 DeleteObjects.
DELETE_CHUNK = 200
_MD5 = re.compile(r"[0-9a-f]{32}")


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
        self._md5_locks = Md5Locks(self.engine, self._locks)
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
        with self._md5_locks.holding((image.md5,)):
            known = self._stored(image.md5)  # another thread may have finished it while we waited
            if known is not None:
                return self._with_near_duplicates(known)
            if self.settings.skip_near_duplicates and (earlier := self._near_duplicate_instead(image)):
                return earlier
            keys = ObjectKeys.for_image(image.md5, image.content_type)
            report = on_stage or _ignore_stage
            self._finish_deletes_of(image.md5)  # what a delete left is not an earlier try to reuse
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

    def is_stored(self, md5: str) -> bool:
        """Whether an analysis of the image with this md5 is stored (one light query)."""
        with database_errors(self.engine), self._sessions() as session:
            return bool(deletions.stored_among(session, [md5.lower()]))

    def delete(self, md5s: Iterable[str], *, dry_run: bool = False) -> DeleteResult:
        """Delete the analyses of these images and everything kept for them; ``missing``: never stored.

        Rows first (the analysis, its classes, objects, faces, signature and vector; batch items are
        unlinked), then the objects (original, thumbnail, overlays, stored JSON). Objects whose delete
        failed stay ``pending`` and are removed by the next delete; nothing shows them meanwhile.
        Every process's similarity index forgets the photos before its next answer.

        Raises:
            ValueError: a text that is not an md5.
            StoreUnavailable, DatabaseUnavailable: one of them is down; nothing was deleted.
        """
        wanted = list(dict.fromkeys(_checked_md5(md5) for md5 in md5s))
        with database_errors(self.engine), self._sessions() as session:
            stored = deletions.stored_among(session, wanted)
        found = [md5 for md5 in wanted if md5 in stored]
        missing = tuple(md5 for md5 in wanted if md5 not in stored)
        if dry_run:
            return DeleteResult(deleted=tuple(found), missing=missing, dry_run=True)
        return replace(self._delete(found), missing=missing)

    def delete_matching(self, query: HistoryQuery, *, dry_run: bool = False) -> DeleteResult:
        """:meth:`delete` every analysis ``query``'s filters find (all pages), oldest first."""
        query = self._resolved(query)
        with database_errors(self.engine), self._sessions() as session:
            md5s = history.matching_md5s(session, query)
        if dry_run:
            return DeleteResult(deleted=tuple(md5s), dry_run=True)
        return self._delete(md5s)

    def pending_deletes(self) -> tuple[PendingObjects, ...]:
        """Objects of deleted analyses still in the store (it failed during their delete), oldest first."""
        with database_errors(self.engine), self._sessions() as session:
            return tuple(deletions.pending(session))

    def retry_deletes(self) -> tuple[PendingObjects, ...]:
        """Remove the objects earlier deletes left in the store; returns what is still there.

        Raises:
            StoreUnavailable: the store is still down (what is pending stays pending).
        """
        left = self.pending_deletes()
        for start in range(0, len(left), DELETE_CHUNK):
            chunk = left[start : start + DELETE_CHUNK]
            with self._md5_locks.holding(item.md5 for item in chunk):
                # Again under the lock: an upload of the same photo may have finished one meanwhile.
                ids = {item.deletion_id for item in chunk}
                with database_errors(self.engine), self._sessions() as session:
                    found = deletions.pending(session, md5s=[item.md5 for item in chunk])
                self._remove_objects([item for item in found if item.deletion_id in ids])
        return self.pending_deletes()

    def _delete(self, md5s: list[str]) -> DeleteResult:
        self.retry_deletes()
        if not md5s:
            return DeleteResult(pending=self.pending_deletes())
        self.store.exists(analysis_key(md5s[0]))  # a store that is down fails here, before any row goes
        deleted: list[str] = []
        store_down: StoreUnavailable | None = None
        for start in range(0, len(md5s), DELETE_CHUNK):
            with self._md5_locks.holding(md5s[start : start + DELETE_CHUNK]):
                with database_errors(self.engine), self._sessions.begin() as session:
                    removed = deletions.delete_rows(session, md5s[start : start + DELETE_CHUNK])
                deleted += [item.md5 for item in removed]
                if store_down is None:
                    try:
                        self._remove_objects(removed)
                    except StoreUnavailable as error:  # the rows are gone: their objects wait for the next delete
                        store_down = error
        if store_down is not None:
            log.warning("deleted %d analyses; their objects wait for the store: %s", len(deleted), store_down)
        log.info("deleted %d analyses", len(deleted))
        return DeleteResult(deleted=tuple(deleted), pending=self.pending_deletes())

    def _remove_objects(self, items: list[PendingObjects]) -> None:
        """Delete the objects of ``items`` (their md5s locked) and record it; what failed stays pending."""
        if not items:
            return
        left = deletions.remove_objects(self.store, items)
        with database_errors(self.engine), self._sessions.begin() as session:
            deletions.record_removed(session, left)

    def _finish_deletes_of(self, md5: str) -> None:
        """Remove the objects a failed delete of ``md5`` left (its lock held), before it is stored again."""
        with database_errors(self.engine), self._sessions() as session:
            left = deletions.pending(session, md5s=[md5])
        if not left:
            return
        log.info("removing the objects an earlier delete of %s left, before storing it again", md5)
        self._remove_objects(left)
        with database_errors(self.engine), self._sessions() as session:
            if deletions.pending(session, md5s=[md5]):
                raise StoreUnavailable("The image store could not delete this image's earlier copy; try again.")

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


def _checked_md5(text: str) -> str:
    md5 = text.strip().lower()
    if not _MD5.fullmatch(md5):
        raise ValueError(f"not an md5: {text!r}")
    return md5


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
