"""The one way in for the UI, the API and the CLI: submit an image, read what is stored.

Write order ("nothing lost"):

1. The md5 is looked up first: an image seen before returns its stored analysis at once, before
   any upload or network runs.
2. Objects go to the store (content-addressed, so writing them again is harmless): original and
   thumbnail, then, after the networks ran, the analysis as JSON.
3. The rows go to the database in one transaction (a batch block's rows: one transaction for the block).

A store failure stops before any row is written. A database failure after step 2 leaves complete
objects behind, and the next try of the same image reuses them, the analysis included. So a row
never points at a missing object, and the networks run once per image.

Overlays are not drawn here: :meth:`PicMetricService.overlay` draws one from the stored original and
results the first time it is asked for (a link, the ZIP export) and keeps it in the store under its key,
under the image's lock, so a delete never races it and removes it with the other objects.

Deleting goes the other way round (rows, then objects: :mod:`picmetric_core.store.deletions`). Storing
and deleting one md5 hold the same lock in every process (:mod:`picmetric_core.store.locks`), and an
upload first removes what an unfinished delete of the same photo left, so neither sees half of the other.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, get_args

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from picmetric_core.config import Settings
from picmetric_core.errors import DatabaseUnavailable, StoreUnavailable
from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.history import HistoryPage, HistoryQuery, LabelKind
from picmetric_core.intake.images import DecodedImage, decode_for, thumbnail_jpeg
from picmetric_core.intake.incoming import Incoming, SourceKind
from picmetric_core.intake.names import clean_filename
from picmetric_core.map.fit import FitProgress, FitReport, fit_map
from picmetric_core.map.view import MapView, map_view
from picmetric_core.map.view import has_map as map_exists
from picmetric_core.map.view import uniqueness_of as map_uniqueness_of
from picmetric_core.overlays import OVERLAY_KINDS, OverlayKind, render_overlay
from picmetric_core.pipeline import StageCallback
from picmetric_core.results import Analysis
from picmetric_core.similar.index import (
    HASH_ONLY_BITS,
    MAX_NEAR_DUPLICATES,
    NearDuplicate,
    SimilarityIndex,
    near_duplicate_distance,
)
from picmetric_core.similar.pgvector import PgVectorIndex, pgvector_index
from picmetric_core.similar.phash import hamming
from picmetric_core.similar.signature import signature_of
from picmetric_core.store import deletions, history
from picmetric_core.store.database import create_database_engine, database_errors, session_factory, upgrade_schema
from picmetric_core.store.deletions import DeleteResult, PendingObjects
from picmetric_core.store.history import LabelCount, TimeCount
from picmetric_core.store.locks import Md5Locks
from picmetric_core.store.objects import (
    ObjectKeys,
    ObjectNotFound,
    ObjectStore,
    analysis_key,
    open_store,
    overlay_key,
)
from picmetric_core.store.orm import AnalysisRow, analysis_row, insert_analyses, utc_now
from picmetric_core.submission import ObjectUrls, SimilarPhoto, Submission
from picmetric_core.views import to_json

log = logging.getLogger(__name__)

SOURCES: tuple[SourceKind, ...] = get_args(SourceKind)
# How many of the most similar photos the History filter "similar to <md5>" lists.
SIMILAR_FILTER_SIZE = 48
# Analyses deleted in one transaction, under one lock: their objects (5 each) fit one S3 DeleteObjects.
DELETE_CHUNK = 200
_MD5 = re.compile(r"[0-9a-f]{32}")


class Analyzer(Protocol):
    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis: ...


RenderOverlay = Callable[[DecodedImage, Analysis, OverlayKind], bytes]


@dataclass(frozen=True)
class ToStore:
    """One image of a batch block and what the networks found in it, for :meth:`PicMetricService.store_analyses`."""

    image: DecodedImage
    analysis: Analysis
    source: SourceKind = "upload"
    filename: str | None = None
    source_url: str | None = None


@dataclass(frozen=True)
class _Prepared:
    """An image of a block whose objects are stored: its row is still to write."""

    index: int
    image: DecodedImage
    analysis: Analysis
    keys: ObjectKeys
    columns: dict[str, Any]
    near: tuple[NearDuplicate, ...]  # stored photos, and images earlier in the block, that are the same picture


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
        render: RenderOverlay | None = None,
    ) -> None:
        self.settings = settings
        self.analyzer = analyzer
        self.store = store if store is not None else open_store(settings)
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else create_database_engine(settings)
        self._render = render or render_overlay
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
        source: SourceKind = "upload",
        filename: str | None = None,
        source_url: str | None = None,
        on_stage: StageCallback | None = None,
    ) -> Submission:
        """Analyse ``image`` and store everything, or return what is stored for it already.

        ``on_stage`` is told each step as it starts: "storing", the networks' names, "saving"; and
        ``"<network> done"`` as each network finishes. No overlay is drawn (see :meth:`overlay`).

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
        source: SourceKind = "upload",
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
        _check(image, analysis, source)
        return self._store(image, lambda _image, on_stage=None: analysis, source, filename, source_url, None)

    def store_analyses(self, items: Sequence[ToStore]) -> list[Submission | Exception]:
        """:meth:`store_analysis` for a batch block: the same objects, dedup and near-duplicates, and the
        block's rows in one transaction.

        Returns, for each item in order, its :class:`Submission` (``seen_before`` for an image stored
        already, or a second copy of one earlier in the block) or the exception that stopped that item
        alone; the other items are stored all the same. When the database refuses the block's
        transaction (another process stored one of its images meanwhile, or refuses one row's values),
        the rows are written again one at a time, so only the item at fault is lost.

        Raises:
            StoreUnavailable, DatabaseUnavailable: the store or the database is down, which is no item's
                fault; no row of the block was written, and a retry reuses the objects stored.
        """
        results: list[Submission | Exception | None] = [None] * len(items)
        first: dict[str, int] = {}  # md5 → the first item with it
        for index, item in enumerate(items):
            try:
                _check(item.image, item.analysis, item.source)
            except ValueError as error:
                results[index] = error
                continue
            first.setdefault(item.image.md5, index)
        if first:
            with self._md5_locks.holding(first):
                self._store_block(items, first, results)
        outcomes: list[Submission | Exception] = []
        for item, result in zip(items, results, strict=True):
            if result is None:  # a later copy of an image of the block
                earlier = results[first[item.image.md5]]
                assert earlier is not None
                result = _seen_copy(earlier)
            outcomes.append(result)
        return outcomes

    def _store_block(
        self, items: Sequence[ToStore], first: dict[str, int], results: list[Submission | Exception | None]
    ) -> None:
        """:meth:`store_analyses` with every md5 of the block locked."""
        with database_errors(self.engine), self._sessions() as session:
            stored = deletions.stored_among(session, list(first))
        for md5 in stored:
            results[first[md5]] = self._stored(md5)
        new = [md5 for md5 in first if md5 not in stored]
        self._finish_deletes_of(new)
        prepared: list[_Prepared] = []
        copies: dict[int, tuple[int, int]] = {}  # skipped near-duplicate → (the block's item it copies, distance)
        for md5 in new:
            index = first[md5]
            try:
                if self.settings.skip_near_duplicates:
                    if earlier := self._near_duplicate_instead(items[index].image):
                        results[index] = earlier
                        continue
                    if twin := _hash_twin(items[index].image.phash, prepared):
                        copies[index] = twin
                        continue
                prepared.append(self._prepare(index, items[index], prepared))
            except (StoreUnavailable, DatabaseUnavailable):
                raise
            except Exception as error:
                log.exception("storing %s failed", md5)
                results[index] = error
        for index, outcome in self._insert_block(prepared):
            results[index] = outcome
        for index, (twin, distance) in copies.items():
            earlier = results[twin]
            if isinstance(earlier, Submission):
                near = (NearDuplicate(earlier.record.md5, distance),)
                results[index] = replace(earlier, seen_before=True, near_duplicates=near)
            else:
                results[index] = earlier

    def _prepare(self, index: int, item: ToStore, earlier: list[_Prepared]) -> _Prepared:
        """Store the objects of a block's new image and find its near-duplicates (stored, or earlier in the block)."""
        image = item.image
        keys = ObjectKeys.for_image(image.md5, image.content_type)
        analysis = self._store_objects(image, keys, lambda _image, on_stage=None: item.analysis, _ignore_stage)
        if analysis.signature is None:
            analysis = replace(analysis, signature=signature_of(image.rgb, None, None, phash=image.phash))
        near = list(self._near_duplicates_of_new(analysis))
        assert analysis.signature is not None
        for other in earlier:
            assert other.analysis.signature is not None
            distance = near_duplicate_distance(analysis.signature, other.analysis.signature)
            if distance is not None:
                near.append(NearDuplicate(other.analysis.md5, distance))
        columns = {"source": item.source, "filename": clean_filename(item.filename), "source_url": item.source_url}
        near.sort(key=lambda d: (d.distance, d.md5))
        return _Prepared(index, image, analysis, keys, columns, tuple(near[:MAX_NEAR_DUPLICATES]))

    def _insert_block(self, prepared: list[_Prepared]) -> list[tuple[int, Submission | Exception]]:
        """The rows of ``prepared`` in one transaction; refused, one transaction each."""
        if not prepared:
            return []
        rows = [self._row(p.image, p.analysis, p.keys, **p.columns) for p in prepared]
        try:
            with database_errors(self.engine), self._sessions.begin() as session:
                insert_analyses(session, rows)
        except SQLAlchemyError as error:
            log.warning(
                "the database refused the rows of a block of %d (%s); writing them one at a time",
                len(prepared),
                type(error).__name__,
            )
            return self._insert_each(prepared)
        log.info("stored the analyses of %d images in one transaction", len(rows))
        submissions = [self._submission(history.stored_analysis(row), seen_before=False) for row in rows]
        return [(p.index, replace(s, near_duplicates=p.near)) for p, s in zip(prepared, submissions, strict=True)]

    def _insert_each(self, prepared: list[_Prepared]) -> list[tuple[int, Submission | Exception]]:
        """Each row of ``prepared`` in a transaction of its own: one the database refuses loses only its item."""
        outcomes: list[tuple[int, Submission | Exception]] = []
        refused: set[str] = set()
        for p in prepared:
            try:
                submission = self._insert(p.image, p.analysis, p.keys, **p.columns)
            except SQLAlchemyError as error:
                log.error("the database refused the row of %s: %s", p.image.md5, error)
                refused.add(p.image.md5)
                outcomes.append((p.index, error))
                continue
            if not submission.seen_before:  # an earlier image of the block that was refused is no near-duplicate
                submission = replace(submission, near_duplicates=tuple(d for d in p.near if d.md5 not in refused))
            outcomes.append((p.index, submission))
        return outcomes

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
            self._finish_deletes_of([image.md5])  # what a delete left is not an earlier try to reuse
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

    def _finish_deletes_of(self, md5s: Sequence[str]) -> None:
        """Remove the objects failed deletes of ``md5s`` left (their locks held), before they are stored again."""
        if not md5s:
            return
        with database_errors(self.engine), self._sessions() as session:
            left = deletions.pending(session, md5s=list(md5s))
        if not left:
            return
        log.info("removing what earlier deletes of %s left, before storing again", ", ".join(i.md5 for i in left))
        self._remove_objects(left)
        with database_errors(self.engine), self._sessions() as session:
            if deletions.pending(session, md5s=list(md5s)):
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

    def map_view(self, query: HistoryQuery | None = None) -> MapView:
        """The History map: every placed photo, those ``query``'s filters keep, photos stored since the fit
        placed on the way (see :mod:`picmetric_core.map`)."""
        query = self._resolved(query or HistoryQuery())
        with database_errors(self.engine):
            return map_view(self._sessions, query, self._similarity.similar)

    def fit_map(self, on_progress: FitProgress | None = None) -> FitReport | None:
        """Fit the map again (or finish an interrupted fit); ``None`` when no photo has an embedding."""
        with database_errors(self.engine):
            return fit_map(self._sessions, on_progress=on_progress)

    def uniqueness(self, md5: str) -> float | None:
        """How unlike its nearest photos a stored photo is, 0 to 1; ``None`` when it is not on the map."""
        return self.uniqueness_of([md5]).get(md5)

    def uniqueness_of(self, md5s: Sequence[str]) -> dict[str, float]:
        """:meth:`uniqueness` of many photos in one query, by md5 (those not on the map are left out)."""
        with database_errors(self.engine):
            return map_uniqueness_of(self._sessions, md5s)

    def has_map(self) -> bool:
        """Whether the History map has been fitted (so History can sort and filter by uniqueness)."""
        with database_errors(self.engine):
            return map_exists(self._sessions)

    def history(self, query: HistoryQuery) -> HistoryPage[Submission]:
        """One page of past analyses matching ``query``, in its sort order, with links to their objects."""
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
        """Links to an image's objects (presigned ones expire after ``PICMETRIC_PRESIGN_EXPIRY_S``).

        The overlays' links name their keys in the store, which hold an overlay once it has been drawn:
        before handing them to anyone, :meth:`with_overlays_stored` (or :meth:`overlay_link` for one).
        """
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
        """A link to one stored object: presigned (expiring) or public on S3, ``None`` for a local store.

        For an overlay, :meth:`overlay_link`: it draws the overlay first when it was never drawn.
        """
        return self.store.url(key)

    def overlay(self, md5: str, kind: OverlayKind, *, original: bytes | None = None) -> bytes:
        """The PNG of one overlay of the stored analysis of ``md5``, at the default display thresholds.

        Drawn the first time it is asked for, from the stored original (``original``, when the caller
        has read it already) and the stored results, and kept in the store under its key: later asks,
        and the key's links, read it back. Analyses stored before overlays were drawn on demand have
        theirs already.

        Raises:
            ObjectNotFound: no analysis of ``md5`` is stored (never, or deleted), or its original is gone.
            StoreUnavailable: the store could not be reached.
        """
        try:
            return self.store.get(overlay_key(md5, kind))
        except ObjectNotFound:
            return self._draw_overlays(md5, (kind,), original)[kind]

    def overlay_link(self, md5: str, kind: OverlayKind) -> str | None:
        """A store link to one overlay (drawn and kept first, if it never was), or ``None`` for a local store.

        Raises:
            ObjectNotFound, StoreUnavailable: as :meth:`overlay`.
        """
        key = overlay_key(md5, kind)
        link = self.store.url(key)
        if link is not None and not self.store.exists(key):
            self._draw_overlays(md5, (kind,))
        return link

    def with_overlays_stored(self, submission: Submission) -> Submission:
        """``submission``, once both its overlays are in the store, so that its ``urls`` all open.

        Only a store with links (S3) hands out links to clients; for a local store nothing is drawn.

        Raises:
            ObjectNotFound, StoreUnavailable: as :meth:`overlay`.
        """
        md5 = submission.record.md5
        if submission.urls.detections is None and submission.urls.faces is None:
            return submission
        missing = tuple(kind for kind in OVERLAY_KINDS if not self.store.exists(overlay_key(md5, kind)))
        if missing:
            self._draw_overlays(md5, missing)
        return submission

    def _draw_overlays(
        self, md5: str, kinds: Sequence[OverlayKind], original: bytes | None = None
    ) -> dict[OverlayKind, bytes]:
        """Draw and keep ``kinds`` of ``md5``'s overlays, under its lock: a delete of the photo either
        comes first (nothing is drawn) or removes them too; two asks at once draw once."""
        with self._md5_locks.holding((md5,)):
            with database_errors(self.engine), self._sessions() as session:
                stored = history.get_by_md5(session, md5)
            if stored is None:
                raise ObjectNotFound(overlay_key(md5, kinds[0]))
            drawn: dict[OverlayKind, bytes] = {}
            for kind in kinds:  # drawn by another request while this one waited
                with suppress(ObjectNotFound):
                    drawn[kind] = self.store.get(overlay_key(md5, kind))
            missing = [kind for kind in kinds if kind not in drawn]
            if missing:
                data = original if original is not None else self.store.get(stored.record.keys.original)
                image = decode_for(self.settings, data)
                for kind in missing:
                    drawn[kind] = self._render(image, stored.analysis, kind)
                    self.store.put(overlay_key(md5, kind), drawn[kind], "image/png")
                log.info("drew the %s overlay(s) of %s", " and ".join(missing), md5)
            return drawn

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
            # No overlays: they are drawn when first asked for (overlay()), off this path.
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

    def _row(self, image: DecodedImage, analysis: Analysis, keys: ObjectKeys, **columns: Any) -> AnalysisRow:
        return analysis_row(
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

    def _insert(self, image: DecodedImage, analysis: Analysis, keys: ObjectKeys, **columns: Any) -> Submission:
        row = self._row(image, analysis, keys, **columns)
        try:
            with database_errors(self.engine), self._sessions.begin() as session:
                insert_analyses(session, [row])
        except IntegrityError:
            # Another process stored the same image between our check and our insert.
            known = self._stored(image.md5)
            if known is None:
                raise
            return known
        log.info("stored analysis of %s (%s)", image.md5, columns["source"])
        return self._submission(history.stored_analysis(row), seen_before=False)


def _ignore_stage(_stage: str) -> None:
    pass


def _check(image: DecodedImage, analysis: Analysis, source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    if analysis.md5 != image.md5:
        raise ValueError(f"the analysis is of {analysis.md5}, not of the image {image.md5}")


def _seen_copy(earlier: Submission | Exception) -> Submission | Exception:
    """What a second copy of an image in a block gets: the first copy's analysis, seen before (or its error)."""
    return replace(earlier, seen_before=True, near_duplicates=()) if isinstance(earlier, Submission) else earlier


def _hash_twin(phash: int, prepared: list[_Prepared]) -> tuple[int, int] | None:
    """The block's earlier image whose hash alone makes it the same picture (index, distance), as
    ``PICMETRIC_SKIP_NEAR_DUPLICATES`` finds stored ones."""
    for other in prepared:
        assert other.analysis.signature is not None
        distance = hamming(phash, other.analysis.signature.phash)
        if distance <= HASH_ONLY_BITS:
            return other.index, distance
    return None


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
