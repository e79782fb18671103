"""The driver of a batch: list the items, start or resume the job, run the Ray Data pipeline, close the job.

The driver itself never decodes or runs a network; it reads only a few small columns back from the
pipeline, to show progress. Everything that counts is written by the workers as items finish, so
a driver that is killed loses nothing that was reported done (see :mod:`picmetric_core.batch.jobs`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from picmetric_core.addresses import is_loopback
from picmetric_core.batch.jobs import BatchJob, BatchOptions, Heartbeat, ItemRecord, JobStore
from picmetric_core.batch.sources import check_items_allowed, list_items
from picmetric_core.config import Settings
from picmetric_core.errors import PicMetricError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Told ``(done, total)`` after each block."""


class JobNotFound(PicMetricError):
    status = 404


class LocalRayExposed(PicMetricError):
    """The local Ray did not keep to the loopback address (a Ray release that resolves it differently)."""

    status = 500


@dataclass(frozen=True)
class BatchSummary:
    """What a run did: the job's final counts, and what this run itself did.

    Attributes:
        job: The job after this run (counts over all its runs).
        ran: Items this run finished (0 on a dry run or when nothing was left).
        inferred: Images this run put through the networks.
        wall_s: This run's wall time, listing included.
        images_per_s: Items finished by the pipeline per second.
        nodes: The Ray nodes whose actors ran the networks in this run.
        failures: The job's failed items with reasons.
        dry_run_items: On a dry run, the items that would run.
    """

    job: BatchJob | None
    ran: int
    inferred: int
    wall_s: float
    images_per_s: float | None
    nodes: tuple[str, ...] = ()
    failures: tuple[ItemRecord, ...] = ()
    dry_run_items: tuple[str, ...] = field(default=(), repr=False)


def run_batch(
    settings: Settings,
    sources: Sequence[str],
    options: BatchOptions,
    progress: Progress | None = None,
    *,
    jobs: JobStore | None = None,
) -> BatchSummary:
    """Analyse every item of ``sources`` not done yet, and store it like the app does.

    Re-running the same sources resumes their newest unfinished job; ``options.resume`` names one.
    ``jobs``: where jobs are recorded (a server's launcher passes its own); by default the process's
    runtime's (:func:`~picmetric_core.runtime.shared_runtime`), so the database has one owner.

    Raises:
        SourceError: a source cannot be listed.
        JobNotFound: ``options.resume`` names no job.
    """
    started = time.perf_counter()
    if jobs is None:
        from picmetric_core.runtime import shared_runtime

        jobs = shared_runtime(settings).jobs()
    job = _job_to_resume(jobs, sources, options)
    items = list_items(job.sources if job else sources, settings)
    limit = job.total if job else options.limit
    items = items[:limit] if limit else items
    if options.allowed_sources is not None:
        check_items_allowed(items, options.allowed_sources)
    if options.dry_run:
        done = jobs.done_items(job.id) if job else set()
        todo = tuple(item for item in items if item not in done)
        return BatchSummary(job, 0, 0, time.perf_counter() - started, None, dry_run_items=todo)
    if job is None:
        job = jobs.start(sources, len(items))
    else:
        jobs.reopen(job.id)
    done = jobs.done_items(job.id)
    todo = [item for item in items if item not in done]
    log.info("batch job %s: %d items, %d left", job.id, len(items), len(todo))
    with Heartbeat(jobs) as heartbeat:
        heartbeat.add(job.id)
        try:
            ran, inferred, nodes, pipeline_s = _run_pipeline(settings, job, todo, options, progress, len(done))
        except BaseException as error:  # KeyboardInterrupt too: the job must not stay "running"
            plain = isinstance(error, PicMetricError)
            reason = str(error) if plain else "the pipeline stopped; see the driver's log"
            log.exception("batch job %s failed", job.id)
            jobs.finish(job.id, "failed", None, reason)
            raise
    speed = ran / pipeline_s if ran and pipeline_s > 0 else None
    final = jobs.finish(job.id, "done", speed)
    return BatchSummary(
        final, ran, inferred, time.perf_counter() - started, speed, nodes, tuple(jobs.failures(job.id))
    )


def _job_to_resume(jobs: JobStore, sources: Sequence[str], options: BatchOptions) -> BatchJob | None:
    if options.resume is not None:
        job = jobs.get(options.resume)
        if job is None:
            raise JobNotFound(f"There is no batch job {options.resume}.")
        return job
    return jobs.unfinished_for(sources)


def _run_pipeline(
    settings: Settings,
    job: BatchJob,
    todo: list[str],
    options: BatchOptions,
    progress: Progress | None,
    already_done: int,
) -> tuple[int, int, tuple[str, ...], float]:
    if not todo:
        return 0, 0, (), 0.0
    from picmetric_core.batch.pipeline import build_dataset

    # A local Ray declares enough logical CPUs for the actors plus one for the read, decode and store
    # tasks: actors holding every CPU would leave the tasks waiting forever.
    local_cpus = max(os.cpu_count() or 1, math.ceil(options.actors[1] * options.actor_cpus + 1))
    with ray_connection(options.address, local_cpus):
        started = time.perf_counter()
        dataset = build_dataset(settings, job, todo, options)
        ran = inferred = 0
        nodes: set[str] = set()
        for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            ran += len(block["item"])
            for node, did_infer in zip(block["node"], block["inferred"], strict=True):
                if did_infer:
                    inferred += 1
                    nodes.add(str(node))
            if progress is not None:
                progress(already_done + ran, job.total)
        return ran, inferred, tuple(sorted(nodes)), time.perf_counter() - started


@contextmanager
def ray_connection(address: str | None, local_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray this process is connected to already, else join ``address``/``RAY_ADDRESS``, else start one.

    A local Ray listens on 127.0.0.1 only (every socket of its GCS server, raylet, agents, workers and
    of this driver; ``tests/batch/test_local_ray_stays_on_loopback.py`` checks them) and keeps its files under
    ``/tmp/ray-picmetric-<uid>``; it stops when the batch ends.

    Raises:
        LocalRayExposed: the local Ray would not run on the loopback address (it is stopped first).
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        with _ray_keeps_loopback():
            ray.init(
                address="local",
                _node_ip_address="127.0.0.1",
                _temp_dir=f"/tmp/ray-picmetric-{os.getuid()}",
                include_dashboard=False,
                dashboard_host="127.0.0.1",
                log_to_driver=False,
                num_cpus=local_cpus,
            )
        node_address = ray.util.get_node_ip_address()
        if not is_loopback(node_address):
            ray.shutdown()
            log.error("the local Ray took the node address %s instead of 127.0.0.1; stopped it", node_address)
            raise LocalRayExposed(
                "The local Ray would have been reachable from the network, so it was stopped and the batch "
                "did not run. Run the batch on a Ray cluster (--address or RAY_ADDRESS) instead."
            )
    try:
        yield
    finally:
        ray.shutdown()


# Ray's switch for "may this node be reached from other machines" (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``,
# copied to ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` when ray is first imported; on by default
# on Linux). While it is on, ``ray.init`` replaces a node address of 127.0.0.1 by the machine's network
# address; the GCS server, the raylet, the core workers (driver, tasks, actors) then listen on every
# interface and the runtime-env agent on the network address. They bind 127.0.0.1 only when the node
# address is a loopback one, so the switch is turned off for the start of a local Ray:
# - in this process, on the module constant, since ray may have been imported already (``ray.data``);
# - in the environment, so that the processes the local Ray starts (they inherit it at their start:
#   raylet, agents, workers) resolve "localhost" the same way.
# Both are put back once ``ray.init`` returns: a later ``ray.init(address=…)`` to a cluster in this
# process (the API runs jobs one after another) must see Ray's default.
_RAY_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _ray_keeps_loopback() -> Iterator[None]:
    from ray._private import ray_constants

    previous_env = os.environ.get(_RAY_CLUSTER_SWITCH)
    previous = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_RAY_CLUSTER_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous
        if previous_env is None:
            os.environ.pop(_RAY_CLUSTER_SWITCH, None)
        else:
            os.environ[_RAY_CLUSTER_SWITCH] = previous_env
