"""Batch jobs and their items in the database: start or resume a job, record finished items, count them.

An item is written once, when it is done (stored new, seen before, or failed), in the same worker
that stored its objects and row; ``(job, item)`` is unique, so a retried or resumed write of the
same item changes nothing. A job's counts are always recounted from its items, never added up.

Whatever runs or queues a job (the CLI's driver, the server's launcher) marks it alive every
``HEARTBEAT_S`` seconds (:class:`Heartbeat`). A job stored as running that has not been marked for
``STALE_AFTER_S`` lost its driver (killed, or its server stopped) and reads as ``interrupted``, with
a message saying how to finish it; nothing it reported done is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from picmetric_core.errors import PicMetricError
from picmetric_core.store.database import database_errors, session_factory
from picmetric_core.store.orm import AnalysisRow, BatchItemRow, BatchJobRow, utc_now

log = logging.getLogger(__name__)

ItemStatus = Literal["new", "seen", "failed"]
JobStatus = Literal["running", "done", "failed", "interrupted"]
"""``interrupted`` is never stored: it is a ``running`` job whose heartbeat stopped."""

HEARTBEAT_S = 5.0
STALE_AFTER_S = 60.0  # twelve missed beats: a slow database or a long garbage collection is not a dead driver


@dataclass(frozen=True)
class ItemRecord:
    """One finished item: where it came from, which image it was, what happened and on which Ray node."""

    item: str
    md5: str | None
    status: ItemStatus
    error: str | None = None
    node: str | None = None
    near_duplicate: bool = False


@dataclass(frozen=True)
class BatchJob:
    """A batch job and its counts so far (``new + seen + failed`` of ``total`` items are done;
    ``near_duplicates`` of the new ones were near-duplicates of photos stored before them)."""

    id: int
    sources: tuple[str, ...]
    status: JobStatus
    total: int
    new: int
    seen: int
    failed: int
    near_duplicates: int
    started_at: datetime
    finished_at: datetime | None
    images_per_s: float | None
    error: str | None

    @property
    def done(self) -> int:
        return self.new + self.seen + self.failed


def sources_key(sources: Sequence[str]) -> str:
    """The same sources in any order give the same key (how a re-run finds the job to resume)."""
    return hashlib.sha256(json.dumps(sorted(s.strip() for s in sources)).encode()).hexdigest()


class JobStore:
    """Reads and writes ``batch_jobs`` and ``batch_items`` (the schema must be upgraded already).

    Args:
        stale_after_s: A running job not marked alive for this long reads as ``interrupted``.
    """

    def __init__(self, engine: Engine, stale_after_s: float = STALE_AFTER_S) -> None:
        self.engine = engine
        self.stale_after = timedelta(seconds=stale_after_s)
        self._sessions = session_factory(engine)

    def start(self, sources: Sequence[str], total: int) -> BatchJob:
        """A new running job over ``sources`` with ``total`` items."""
        row = BatchJobRow(
            sources=list(sources), sources_key=sources_key(sources), status="running", total=total,
            new=0, seen=0, failed=0, started_at=utc_now(), heartbeat_at=utc_now(),
        )  # fmt: skip
        with database_errors(self.engine), self._sessions.begin() as session:
            session.add(row)
        return self._job(row, {})

    def get(self, job_id: int) -> BatchJob | None:
        with database_errors(self.engine), self._sessions() as session:
            row = session.get(BatchJobRow, job_id)
            return self._job(row, self._counts(session, job_id)) if row is not None else None

    def unfinished_for(self, sources: Sequence[str]) -> BatchJob | None:
        """The newest job over the same sources that did not finish (its driver stopped or failed)."""
        statement = (
            select(BatchJobRow.id)
            .where(BatchJobRow.sources_key == sources_key(sources), BatchJobRow.status != "done")
            .order_by(BatchJobRow.id.desc())
            .limit(1)
        )
        with database_errors(self.engine), self._sessions() as session:
            job_id = session.scalar(statement)
        return self.get(job_id) if job_id is not None else None

    def recent(self, limit: int = 50) -> list[BatchJob]:
        """The newest jobs first."""
        with database_errors(self.engine), self._sessions() as session:
            rows = session.scalars(select(BatchJobRow).order_by(BatchJobRow.id.desc()).limit(limit)).all()
            return [self._job(row, self._counts(session, row.id)) for row in rows]

    def done_items(self, job_id: int) -> set[str]:
        with database_errors(self.engine), self._sessions() as session:
            return set(session.scalars(select(BatchItemRow.item).where(BatchItemRow.job_id == job_id)))

    def failures(self, job_id: int, limit: int = 200) -> list[ItemRecord]:
        """The job's failed items with their reasons, in the order they failed."""
        statement = (
            select(BatchItemRow)
            .where(BatchItemRow.job_id == job_id, BatchItemRow.status == "failed")
            .order_by(BatchItemRow.id)
            .limit(limit)
        )
        with database_errors(self.engine), self._sessions() as session:
            return [_record(row) for row in session.scalars(statement)]

    def items(self, job_id: int) -> list[ItemRecord]:
        with database_errors(self.engine), self._sessions() as session:
            rows = session.scalars(select(BatchItemRow).where(BatchItemRow.job_id == job_id).order_by(BatchItemRow.id))
            return [_record(row) for row in rows]

    def stored_since(self, md5s: Iterable[str]) -> dict[str, datetime]:
        """Which of ``md5s`` have a stored analysis, and when it was stored (one query per block)."""
        wanted = sorted(set(md5s))
        if not wanted:
            return {}
        statement = select(AnalysisRow.md5, AnalysisRow.created_at).where(AnalysisRow.md5.in_(wanted))
        with database_errors(self.engine), self._sessions() as session:
            return dict(session.execute(statement).tuples().all())

    def record(self, job_id: int, records: Sequence[ItemRecord]) -> None:
        """Write finished items in one transaction; an item recorded already is left as it is."""
        if not records:
            return
        values = [
            {"job_id": job_id, "item": r.item, "md5": r.md5, "status": r.status, "error": r.error, "node": r.node,
             "near_duplicate": r.near_duplicate, "finished_at": utc_now()}
            for r in records
        ]  # fmt: skip
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(BatchItemRow).values(values)
        statement = statement.on_conflict_do_nothing(index_elements=["job_id", "item"])
        with database_errors(self.engine), self._sessions.begin() as session:
            session.execute(statement)

    def finish(self, job_id: int, status: JobStatus, images_per_s: float | None, error: str | None = None) -> BatchJob:
        """Close the job: final counts from its items, when it ended, its speed, and why it failed if it did."""
        with database_errors(self.engine), self._sessions.begin() as session:
            row = session.get(BatchJobRow, job_id)
            if row is None:
                raise LookupError(f"no batch job {job_id}")
            _one_new_item_per_image(session, job_id)
            counts = self._counts(session, job_id)
            row.new, row.seen, row.failed = counts.get("new", 0), counts.get("seen", 0), counts.get("failed", 0)
            row.status, row.finished_at, row.images_per_s, row.error = status, utc_now(), images_per_s, error
            return self._job(row, counts)

    def reopen(self, job_id: int) -> None:
        """Mark a job running again (when it is resumed)."""
        with database_errors(self.engine), self._sessions.begin() as session:
            row = session.get(BatchJobRow, job_id)
            if row is not None:
                row.status, row.finished_at, row.error, row.heartbeat_at = "running", None, None, utc_now()

    def beat(self, job_ids: Iterable[int]) -> None:
        """Mark these jobs alive (those still running)."""
        ids = sorted(set(job_ids))
        if not ids:
            return
        statement = (
            update(BatchJobRow)
            .where(BatchJobRow.id.in_(ids), BatchJobRow.status == "running")
            .values(heartbeat_at=utc_now())
        )
        with database_errors(self.engine), self._sessions.begin() as session:
            session.execute(statement)

    @staticmethod
    def _counts(session, job_id: int) -> dict[str, int]:
        statement = (
            select(BatchItemRow.status, func.count()).where(BatchItemRow.job_id == job_id).group_by(BatchItemRow.status)
        )
        counts = dict(session.execute(statement).tuples().all())
        near = select(func.count()).where(
            BatchItemRow.job_id == job_id, BatchItemRow.status == "new", BatchItemRow.near_duplicate.is_(True)
        )
        return counts | {"near_duplicates": session.scalar(near) or 0}

    def _job(self, row: BatchJobRow, counts: dict[str, int]) -> BatchJob:
        status, error = row.status, row.error
        last_sign_of_life = row.heartbeat_at or row.started_at
        if status == "running" and utc_now() - last_sign_of_life > self.stale_after:
            status = "interrupted"
            error = (
                f"This job stopped before it finished: nothing has run it since {last_sign_of_life:%Y-%m-%d %H:%M} UTC "
                f"(its driver or server was stopped). Start the same sources again, or run "
                f"`picmetric batch --resume {row.id}`, to finish it; what it did already is kept."
            )
        return BatchJob(
            id=row.id,
            sources=tuple(row.sources),
            status=status,  # type: ignore[arg-type]
            total=row.total,
            new=counts.get("new", 0),
            seen=counts.get("seen", 0),
            failed=counts.get("failed", 0),
            near_duplicates=counts.get("near_duplicates", 0),
            started_at=row.started_at,
            finished_at=row.finished_at,
            images_per_s=row.images_per_s,
            error=error,
        )


class Heartbeat:
    """Marks a set of jobs alive every ``HEARTBEAT_S`` seconds on a daemon thread, until closed.

    A failed beat (the database is down) is logged and tried again at the next one: the job is not
    dead because its database blinked.
    """

    def __init__(self, jobs: JobStore, every_s: float = HEARTBEAT_S) -> None:
        self._jobs = jobs
        self._every_s = every_s
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="picmetric-batch-heartbeat", daemon=True)
        self._thread.start()

    def add(self, job_id: int) -> None:
        with self._lock:
            self._ids.add(job_id)

    def discard(self, job_id: int) -> None:
        with self._lock:
            self._ids.discard(job_id)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._every_s)

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stopped.wait(self._every_s):
            with self._lock:
                ids = set(self._ids)
            try:
                self._jobs.beat(ids)
            except PicMetricError as error:
                log.warning("could not mark batch jobs %s alive: %s", sorted(ids), error)


def _one_new_item_per_image(session, job_id: int) -> None:
    """Keep ``new`` on the first item of each image this job stored; its other items were seen before.

    Two items can both look new: a copy of a file stored moments before by another block of the same
    run, or an item of an interrupted run whose image was stored but not recorded, found again on resume
    (both were stored at or after the job started).
    """
    first = (
        select(func.min(BatchItemRow.id))
        .where(BatchItemRow.job_id == job_id, BatchItemRow.status == "new")
        .group_by(BatchItemRow.md5)
    )
    session.execute(
        update(BatchItemRow)
        .where(BatchItemRow.job_id == job_id, BatchItemRow.status == "new", BatchItemRow.id.not_in(first))
        .values(status="seen")
    )


def _record(row: BatchItemRow) -> ItemRecord:
    return ItemRecord(item=row.item, md5=row.md5, status=row.status, error=row.error, node=row.node)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch.

    Attributes:
        limit: At most this many items (the first ones, in listing order).
        batch_size: Images per block and per ``analyze_many`` call.
        actors: The actor pool's (min, max) size; each actor holds one copy of the networks.
        gpus_per_actor: GPUs each actor asks for (0 on CPU machines).
        actor_cpus: Logical CPUs each actor reserves. Keep it below a node's CPUs, or the read and
            decode tasks get none and the pipeline waits forever.
        task_cpus: Logical CPUs each read, decode and store task reserves.
        address: A Ray cluster to join (``ray://…``, ``host:port`` or ``auto``); ``None``: ``RAY_ADDRESS``,
            else a local Ray on 127.0.0.1.
        resume: The id of a job to finish.
        dry_run: List the items and say what would run, without starting a job.
        allowed_sources: When set (jobs started from the API or the page), every listed item must be
            inside one of these folders or ``s3://bucket/prefix`` locations.
    """

    limit: int | None = None
    batch_size: int = 8
    actors: tuple[int, int] = (1, 1)
    gpus_per_actor: float = 0.0
    actor_cpus: float = 1.0
    task_cpus: float = 0.5
    address: str | None = None
    resume: int | None = None
    dry_run: bool = False
    allowed_sources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if not 1 <= self.actors[0] <= self.actors[1]:
            raise ValueError("actors must be MIN,MAX with 1 <= MIN <= MAX")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1")
