"""Batch benchmark: the same photos through a local Ray (1 and 2 actors) and in-process ``analyze_many``.

    python bench/batch_bench.py                  # 120 photos (a couple of minutes on 2 cores)
    python bench/batch_bench.py --images 1000    # the issue's size
    python bench/batch_bench.py --actors 1,2,3 --batch-size 16

Every run starts from files on disk and ends with objects and rows stored (a fresh SQLite file and
local folder store each), so the figures compare like with like: read, md5, decode, the three
networks, objects and rows (overlays are drawn on demand since issue #21, not here). Wall times
include loading the networks once (per actor for Ray). Peak memory is each process's high-water mark
(VmHWM), sampled while the pipeline runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Photo variants come from the test helpers (not runtime code).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROLES = {"AnalyzeActor": "actor", "read_block": "read+decode task", "store_block": "store task"}


class PeakMemory:
    """Samples the high-water RSS of Ray's worker processes by role while a run goes on."""

    def __init__(self) -> None:
        self.peaks: dict[str, dict[int, int]] = defaultdict(dict)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                    role = next((name for key, name in ROLES.items() if key in title), None)
                    if role is None:
                        continue
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            kib = int(line.split()[1])
                            self.peaks[role][int(proc.name)] = max(self.peaks[role].get(int(proc.name), 0), kib)
                except (OSError, ValueError):
                    continue

    def report(self) -> str:
        parts = [f"{role} {max(kib.values()) / 1024:.0f} MiB (max of {len(kib)})" for role, kib in self.peaks.items()]
        return ", ".join(sorted(parts))


def settings_in(folder: Path, models_dir: Path):
    from picmetric_core.config import Settings

    return Settings(
        _env_file=None, data_dir=folder, database_url=None, s3_bucket=None, store_dir=None, models_dir=models_dir
    )


def in_process(paths: list[Path], models_dir: Path, batch_size: int, workdir: Path) -> tuple[float, float]:
    """Wall seconds (load included) and load seconds of read → decode → analyze_many → store in this process."""
    from picmetric_core.intake.images import decode_for
    from picmetric_core.lifecycle import freeze_the_heap
    from picmetric_core.pipeline import get_analyzer
    from picmetric_core.service import PicMetricService, ToStore

    settings = settings_in(workdir / "in-process", models_dir)
    started = time.perf_counter()
    analyzer = get_analyzer(settings)
    freeze_the_heap()  # as the actors do once their networks are loaded
    loaded = time.perf_counter() - started
    service = PicMetricService(settings, analyzer)
    for start in range(0, len(paths), batch_size):
        images = [decode_for(settings, path.read_bytes()) for path in paths[start : start + batch_size]]
        analyses = analyzer.analyze_many(images, batch_size=batch_size)
        # As the Ray store stage does: a block's objects, then its rows in one transaction.
        service.store_analyses(
            [ToStore(image, analysis, filename=image.md5) for image, analysis in zip(images, analyses, strict=True)]
        )
    service.close()
    return time.perf_counter() - started, loaded


def on_ray(
    folder: Path, models_dir: Path, batch_size: int, actors: int, workdir: Path
) -> tuple[float, float, float, str]:
    """Seconds of the pipeline (actor loads included) and of the whole run (Ray start too), steady img/s, memory."""
    from picmetric_core.batch.jobs import BatchOptions
    from picmetric_core.batch.runner import run_batch

    settings = settings_in(workdir / f"ray-{actors}", models_dir)
    with PeakMemory() as memory:
        summary = run_batch(settings, [str(folder)], BatchOptions(batch_size=batch_size, actors=(actors, actors)))
    assert summary.job is not None and summary.job.new == summary.job.total, summary
    pipeline_s = summary.ran / summary.images_per_s if summary.images_per_s else float("nan")
    return pipeline_s, summary.wall_s, steady_rate(settings, summary.job.id), memory.report()


def steady_rate(settings, job_id: int) -> float:
    """Items per second between the first and the last item finishing: the pipeline once the networks are loaded."""
    from sqlalchemy import func, select

    from picmetric_core.store.database import create_database_engine
    from picmetric_core.store.orm import BatchItemRow

    engine = create_database_engine(settings)
    with engine.connect() as connection:
        first, last, count = connection.execute(
            select(func.min(BatchItemRow.finished_at), func.max(BatchItemRow.finished_at), func.count()).where(
                BatchItemRow.job_id == job_id
            )
        ).one()
    engine.dispose()
    return (count - 1) / (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120, help="photos per run (default 120; the issue's is 1000)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--actors", default="1,2", help="actor counts to try, e.g. 1,2 (0: in-process only)")
    parser.add_argument(
        "--later-start",
        action="store_true",
        help="load the networks once in another process first, as a first start does, so that every run below "
        "is a later start (reads the kept engine choices and converted models; see docs/performance.md)",
    )
    args = parser.parse_args()

    from tests.support.batch import write_variants

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as temp:
        workdir = Path(temp)
        models_dir = workdir / "models"  # empty: the registry-shipped default models
        models_dir.mkdir()
        if args.later_start:
            first_start(models_dir, workdir)
        paths = sorted(write_variants(workdir / "photos", args.images, seed=7).values())
        print(f"{len(paths)} photos (160-320 px), batch size {args.batch_size}, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        for actors in (int(n) for n in args.actors.split(",") if int(n) > 0):  # 0: in-process only
            pipeline_s, wall_s, steady, memory = on_ray(
                workdir / "photos", models_dir, args.batch_size, actors, workdir
            )
            print(
                f"Ray, {actors} actor(s): pipeline {pipeline_s:.1f} s ({len(paths) / pipeline_s:.1f} img/s), "
                f"steady {steady:.1f} img/s once loaded, run with Ray start {wall_s:.1f} s; peak memory: {memory}"
            )
        wall_s, load_s = in_process(paths, models_dir, args.batch_size, workdir)
        print(
            f"in-process analyze_many: {wall_s:.1f} s ({len(paths) / wall_s:.1f} img/s) incl. {load_s:.1f} s loading, "
            f"steady {len(paths) / (wall_s - load_s):.1f} img/s; peak RSS of this process {_own_peak_mib():.0f} MiB; "
            f"TensorFlow {'loaded' if 'tensorflow' in sys.modules else 'not loaded'}"
        )


def first_start(models_dir: Path, workdir: Path) -> None:
    """Loads the networks in a child process, which chooses their engines and keeps what it converted."""
    import subprocess

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from bench.batch_bench import settings_in; "
        "from picmetric_core.pipeline import get_analyzer; from pathlib import Path; "
        "get_analyzer(settings_in(Path(sys.argv[2]), Path(sys.argv[3])))"
    )
    root = Path(__file__).resolve().parents[1]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(root), str(workdir / "first-start"), str(models_dir)], check=True)
    print(f"first start (engines chosen, models converted) in another process: {time.perf_counter() - started:.1f} s")


def _own_peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
