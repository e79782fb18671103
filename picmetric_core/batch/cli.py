"""``picmetric batch SOURCE…``: analyse folders, globs, URL lists or S3 prefixes on Ray, with a progress bar."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from picmetric_core.config import Settings

DESCRIPTION = (
    "Analyse every image of a folder (recursive), a glob, a text file of paths/URLs or s3://bucket/prefix on "
    "Ray Data, storing results like the app. Re-running the same sources resumes their unfinished job."
)


def register(commands: Any) -> None:
    """Add the ``batch`` command to the main CLI's subcommands."""
    parser = commands.add_parser("batch", help="analyse many images on Ray", description=DESCRIPTION)
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="folder, glob, list file or s3://bucket/prefix")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N items")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per block (default 8)")
    parser.add_argument("--actors", type=_actors, default=(1, 1), metavar="MIN,MAX", help="actor pool size")
    parser.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="G", help="GPUs per actor")
    parser.add_argument("--actor-cpus", type=float, default=1.0, metavar="C", help="logical CPUs per actor")
    parser.add_argument("--address", metavar="ADDR", help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    parser.add_argument("--resume", type=int, metavar="JOB", help="finish this job")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, start nothing")
    parser.set_defaults(handler=batch_command)


def batch_command(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from picmetric_core.batch.jobs import BatchOptions
    from picmetric_core.batch.runner import run_batch
    from picmetric_core.errors import PicMetricError
    from picmetric_core.native_logs import native_stderr_to_log

    if not args.sources and args.resume is None:
        print("picmetric batch: name at least one SOURCE, or --resume JOB", file=sys.stderr)
        return 2
    try:
        options = BatchOptions(
            limit=args.limit,
            batch_size=args.batch_size,
            actors=args.actors,
            gpus_per_actor=args.gpus_per_actor,
            actor_cpus=args.actor_cpus,
            address=args.address,
            resume=args.resume,
            dry_run=args.dry_run,
        )
    except ValueError as error:
        print(f"picmetric batch: {error}", file=sys.stderr)
        return 2
    try:
        # Ray's start-up notices and Ray Data's plan are for the log; the bar and the summary are the user's.
        with (
            native_stderr_to_log() as terminal,
            tqdm(unit="img", desc="batch", disable=args.dry_run, file=terminal) as bar,
        ):

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            summary = run_batch(settings, args.sources, options, progress)
    except PicMetricError as error:
        print(f"picmetric batch: {error}", file=sys.stderr)
        return 1
    if options.dry_run:
        resuming = f" (resuming job {summary.job.id})" if summary.job else ""
        print(f"dry run{resuming}: {len(summary.dry_run_items)} items would run")
        for item in summary.dry_run_items[:20]:
            print(f"  {item}")
        return 0
    job = summary.job
    assert job is not None
    print(
        f"job {job.id}: {job.total} items — new {job.new}{_near_duplicates(job.near_duplicates)}, "
        f"seen before {job.seen}, failed {job.failed}\n"
        f"this run: {summary.ran} items, {summary.inferred} through the networks, "
        f"{summary.images_per_s or 0:.1f} images/s, wall {summary.wall_s:.1f} s"
    )
    for failure in summary.failures:
        print(f"  failed: {failure.item}: {failure.error}")
    return 1 if job.failed else 0


def _actors(text: str) -> tuple[int, int]:
    low, _, high = text.partition(",")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (e.g. 1,4), not {text!r}") from None


def _near_duplicates(count: int) -> str:
    """What follows the count of new images: ``" (2 near-duplicates)"``, or nothing when there are none."""
    return f" ({count} near-duplicate{'s' if count != 1 else ''})" if count else ""
