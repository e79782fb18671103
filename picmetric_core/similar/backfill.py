"""Signatures for analyses stored before similar photos were indexed: read each original, hash it, embed it.

Resumable: each batch is committed on its own, and a run picks up every analysis that still lacks a
signature (or has only a hash), so an interrupted run is simply started again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from picmetric_core.config import Settings
from picmetric_core.errors import ImageRejected
from picmetric_core.intake.images import DecodedImage, decode_for
from picmetric_core.similar.signature import signature_of
from picmetric_core.store.objects import ObjectNotFound, ObjectStore
from picmetric_core.store.orm import AnalysisRow, SignatureRow, signature_row

if TYPE_CHECKING:  # the networks (TensorFlow) load only when a backfill runs
    from picmetric_core.models.classifier import KerasClassifier

log = logging.getLogger(__name__)

DEFAULT_BATCH = 16


@dataclass(frozen=True)
class BackfillReport:
    """What a run did: analyses indexed, analyses whose original could not be read, and how many still lack one."""

    indexed: int
    failed: int
    remaining: int


@dataclass(frozen=True)
class _Pending:
    analysis_id: int
    md5: str
    original_key: str


def backfill(
    sessions: sessionmaker[Session],
    store: ObjectStore,
    classifier: KerasClassifier,
    settings: Settings,
    *,
    batch_size: int = DEFAULT_BATCH,
    limit: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> BackfillReport:
    """Give every analysis without a full signature one, ``batch_size`` analyses a time, oldest first.

    Args:
        sessions: The database's sessions.
        store: Where the originals are.
        classifier: The classifier the pipeline runs (embeddings of another network would not compare).
        settings: The image limits originals are decoded with.
        batch_size: Analyses per batch (one classifier batch and one transaction each).
        limit: Stop after this many analyses (``None``: all).
        on_batch: Told the running totals (indexed, failed) after each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    indexed = failed = 0
    after_id = 0
    while limit is None or indexed + failed < limit:
        size = batch_size if limit is None else min(batch_size, limit - indexed - failed)
        with sessions() as session:
            pending = [_Pending(*row) for row in session.execute(_pending_rows(after_id).limit(size))]
        if not pending:
            break
        after_id = pending[-1].analysis_id
        readable = [(item, image) for item in pending if (image := _original(store, settings, item)) is not None]
        failed += len(pending) - len(readable)
        outputs = classifier.classify_batch_with_features([image.rgb for _, image in readable])
        with sessions.begin() as session:
            ids = [item.analysis_id for item, _ in readable]
            session.execute(delete(SignatureRow).where(SignatureRow.analysis_id.in_(ids)))
            for (item, image), (_, features) in zip(readable, outputs, strict=True):
                row = signature_row(signature_of(image.rgb, features, classifier.info.name))
                row.analysis_id = item.analysis_id
                session.add(row)
        indexed += len(readable)
        if on_batch is not None:
            on_batch(indexed, failed)
    with sessions() as session:
        remaining = session.scalar(select(func.count()).select_from(_pending_rows(0).subquery())) or 0
    return BackfillReport(indexed=indexed, failed=failed, remaining=remaining)


def _lacking_signature() -> ColumnElement[bool]:
    return or_(SignatureRow.id.is_(None), SignatureRow.embedding.is_(None))


def _pending_rows(after_id: int):
    return (
        select(AnalysisRow.id, AnalysisRow.md5, AnalysisRow.original_key)
        .outerjoin(SignatureRow, SignatureRow.analysis_id == AnalysisRow.id)
        .where(_lacking_signature(), AnalysisRow.id > after_id)
        .order_by(AnalysisRow.id)
    )


def _original(store: ObjectStore, settings: Settings, item: _Pending) -> DecodedImage | None:
    try:
        return decode_for(settings, store.get(item.original_key))
    except ObjectNotFound:
        log.warning("backfill: the original of %s is missing from the store", item.md5)
    except ImageRejected as error:
        log.warning("backfill: the original of %s cannot be decoded (%s)", item.md5, error)
    return None
