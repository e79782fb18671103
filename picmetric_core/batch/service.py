"""Batch jobs started from the API or the Batches page: checked sources, one job at a time in the background.

Only sources inside ``PICMETRIC_BATCH_ALLOWED_SOURCES`` may be named here. Jobs run one after another
on one background thread of the server process (Ray parallelises inside each job). Queued jobs are
kept alive by the launcher's heartbeat; a job whose server stops reads as ``interrupted`` a minute
later and is resumed by starting the same sources again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from sqlalchemy import Engine

from picmetric_core.batch.jobs import BatchJob, BatchOptions, Heartbeat, JobStore
from picmetric_core.batch.runner import run_batch
from picmetric_core.batch.sources import SourceNotAllowed, check_allowed, check_items_allowed, list_items
from picmetric_core.config import Settings

log = logging.getLogger(__name__)

MAX_SOURCES = 20


@dataclass(frozen=True)
class Started:
    """A job the caller asked for: ``resumed`` when it continues an unfinished job over the same sources."""

    job: BatchJob
    resumed: bool


class BatchLauncher:
    """Starts checked batch jobs in the background and answers what they are doing. Thread-safe."""

    def __init__(self, settings: Settings, engine: Engine, options: BatchOptions | None = None) -> None:
        self.settings = settings
        self.jobs = JobStore(engine)
        self.options = replace(options or BatchOptions(), allowed_sources=tuple(settings.batch_allowed_sources))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="picmetric-batch")
        self._queued: set[int] = set()
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(self.jobs)

    def start(self, sources: Sequence[str], limit: int | None = None) -> Started:
        """Check and list ``sources``, record the job, and queue it.

        Raises:
            SourceNotAllowed: a source outside the allowed folders and buckets (or none configured).
            SourceError: a source that does not exist or holds no images.
            ValueError: no sources, or too many.
        """
        cleaned = [source.strip() for source in sources if source.strip()]
        if not 1 <= len(cleaned) <= MAX_SOURCES:
            raise ValueError(f"Name between 1 and {MAX_SOURCES} sources.")
        if not self.settings.batch_allowed_sources:
            raise SourceNotAllowed("Batch jobs cannot be started here: no folders or buckets are allowed for them.")
        check_allowed(cleaned, self.settings.batch_allowed_sources)
        with self._lock:
            job = self.jobs.unfinished_for(cleaned)
            resumed = job is not None
            if job is None:
                items = list_items(cleaned, self.settings)
                check_items_allowed(items, self.settings.batch_allowed_sources)
                job = self.jobs.start(cleaned, min(len(items), limit) if limit else len(items))
            if job.id not in self._queued:
                self._queued.add(job.id)
                self._heartbeat.add(job.id)
                self._executor.submit(self._run, job.id)
        return Started(job, resumed)

    def get(self, job_id: int) -> BatchJob | None:
        return self.jobs.get(job_id)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._heartbeat.close()

    def _run(self, job_id: int) -> None:
        try:
            run_batch(self.settings, [], replace(self.options, resume=job_id), jobs=self.jobs)
        except Exception:
            log.exception("batch job %s stopped", job_id)
        finally:
            with self._lock:
                self._queued.discard(job_id)
                self._heartbeat.discard(job_id)
