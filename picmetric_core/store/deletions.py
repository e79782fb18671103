"""Deleting stored analyses: rows first, with a log entry in the same transaction, then their objects.

Order ("never a row without its objects"):

1. In one transaction: delete the analyses (their classifications, detections, faces, signatures and,
   on pgvector, the signatures' vectors go by ``ON DELETE CASCADE``), unlink their batch items, and
   write one ``deletions`` row each with the object keys to remove.
2. Delete the objects from the store, the stored analysis JSON first (its presence means "every object
   is complete, reuse them"), and clear the log row's md5 and keys.

A store that fails at step 2 leaves the log rows pending: nothing shows the photo any more (there is
no row), and the next delete (or the next upload of the same photo) removes what is left.

The caller holds :class:`~picmetric_core.store.locks.Md5Locks` for the md5s from before step 1 until
after step 2, so an upload of the same photo cannot interleave.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import Session

from picmetric_core.store.objects import ObjectKeys, ObjectStore, analysis_key
from picmetric_core.store.orm import AnalysisRow, BatchItemRow, DeletionRow, SignatureRow, utc_now

log = logging.getLogger(__name__)

# Rows are written in id order: readers that ask for "the ids above the last I read" miss none.
LOG_LOCK_ID = 0x504D_444C  # "PMDL"
_IN_LIST = 1000  # md5s per IN (...) list


@dataclass(frozen=True)
class PendingObjects:
    """Objects of a deleted analysis still in the store (the store failed); the next delete retries them."""

    deletion_id: int
    md5: str
    keys: tuple[str, ...]
    deleted_at: datetime


@dataclass(frozen=True)
class DeleteResult:
    """What a delete did.

    Attributes:
        deleted: The md5s whose analyses were deleted (with ``dry_run``: would be), oldest first.
        missing: md5s asked for by name that have no analysis.
        pending: Objects still in the store because it failed, of this delete or an earlier one.
        dry_run: Nothing was deleted; ``deleted`` says what would have been.
    """

    deleted: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    pending: tuple[PendingObjects, ...] = ()
    dry_run: bool = False

    @property
    def pending_objects(self) -> int:
        return sum(len(item.keys) for item in self.pending)


def object_keys(md5: str, keys: ObjectKeys) -> tuple[str, ...]:
    """Every object an analysis has in the store, in the order they are deleted (the analysis JSON first)."""
    return (analysis_key(md5), keys.original, keys.thumbnail, keys.detections, keys.faces)


def stored_among(session: Session, md5s: Sequence[str]) -> set[str]:
    """Which of ``md5s`` have an analysis."""
    found: set[str] = set()
    for start in range(0, len(md5s), _IN_LIST):
        chunk = md5s[start : start + _IN_LIST]
        found.update(session.scalars(select(AnalysisRow.md5).where(AnalysisRow.md5.in_(chunk))))
    return found


def delete_rows(session: Session, md5s: Sequence[str]) -> list[PendingObjects]:
    """Step 1 for ``md5s`` in the caller's transaction; returns each deleted analysis's objects to remove.

    md5s without an analysis are skipped.
    """
    if not md5s:
        return []
    signatures = dict(
        session.execute(
            select(AnalysisRow.md5, SignatureRow.id)
            .join(SignatureRow, SignatureRow.analysis_id == AnalysisRow.id)
            .where(AnalysisRow.md5.in_(md5s))
        )
        .tuples()
        .all()
    )
    table = AnalysisRow.__table__
    deleted = session.execute(
        delete(table)
        .where(table.c.md5.in_(md5s))
        .returning(table.c.md5, table.c.original_key, table.c.detections_key, table.c.faces_key, table.c.thumbnail_key)
    ).all()
    if not deleted:
        return []
    gone = [row.md5 for row in deleted]
    session.execute(update(BatchItemRow.__table__).where(BatchItemRow.md5.in_(gone)).values(md5=None))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOG_LOCK_ID})
    now = utc_now()
    entries = [
        {
            "deleted_at": now,
            "signature_id": signatures.get(row.md5),
            "md5": row.md5,
            "object_keys": list(object_keys(row.md5, ObjectKeys(*row[1:]))),
        }
        for row in deleted
    ]
    ids = session.scalars(insert(DeletionRow).returning(DeletionRow.id, sort_by_parameter_order=True), entries).all()
    return [
        PendingObjects(deletion_id, entry["md5"], tuple(entry["object_keys"]), now)
        for deletion_id, entry in zip(ids, entries, strict=True)
    ]


def pending(session: Session, md5s: Sequence[str] | None = None) -> list[PendingObjects]:
    """Deleted analyses whose objects are not all gone yet (of these md5s, or all), oldest first."""
    statement = select(DeletionRow).where(DeletionRow.md5.is_not(None)).order_by(DeletionRow.id)
    if md5s is not None:
        statement = statement.where(DeletionRow.md5.in_(md5s))
    return [
        PendingObjects(row.id, row.md5 or "", tuple(row.object_keys or ()), row.deleted_at)
        for row in session.scalars(statement)
    ]


def remove_objects(store: ObjectStore, items: Sequence[PendingObjects]) -> dict[int, tuple[str, ...]]:
    """Step 2: delete the objects of ``items``; returns, by deletion id, the keys still in the store.

    Raises:
        StoreUnavailable: the store could not be reached.
    """
    keys = [key for item in items for key in item.keys]
    failed = set(store.delete_many(keys)) if keys else set()
    return {item.deletion_id: tuple(key for key in item.keys if key in failed) for item in items}


def record_removed(session: Session, left: dict[int, tuple[str, ...]]) -> None:
    """Mark what :func:`remove_objects` did: done rows forget their md5 and keys; others keep the keys left."""
    done = [deletion_id for deletion_id, keys in left.items() if not keys]
    for start in range(0, len(done), _IN_LIST):
        session.execute(
            update(DeletionRow.__table__)
            .where(DeletionRow.id.in_(done[start : start + _IN_LIST]))
            .values(md5=None, object_keys=None, objects_deleted_at=utc_now())
        )
    for deletion_id, keys in left.items():
        if keys:
            session.execute(
                update(DeletionRow.__table__).where(DeletionRow.id == deletion_id).values(object_keys=list(keys))
            )


def deleted_signatures_since(session: Session, after_id: int) -> list[tuple[int, int | None]]:
    """``(deletion id, signature id)`` of the deletions after ``after_id``, in id order."""
    statement = select(DeletionRow.id, DeletionRow.signature_id).where(DeletionRow.id > after_id)
    return list(session.execute(statement.order_by(DeletionRow.id)).tuples())


def last_deletion_id(session: Session) -> int:
    """The id of the newest deletion (0 when nothing was ever deleted)."""
    return session.scalar(select(DeletionRow.id).order_by(DeletionRow.id.desc()).limit(1)) or 0
