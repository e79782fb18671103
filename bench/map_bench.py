"""How long do the History map's fit, a new photo's placement and a map read take with many photos?

Seeds a fresh SQLite database (a temporary folder, or ``--data``: a folder seeded by an earlier run is
reused as it is) with synthetic analyses: 1280-dimension embeddings around 500 centres (as
EfficientNet-Lite0 gives them), then times ``picmetric map fit``'s work (wall and CPU time, peak RSS),
placing one new photo from its nearest neighbours (the first placement also loads the fit's space), and
one map read (points, labels, objects, faces, the filter's md5s: what a page open and ``GET /v1/map`` cost).

Usage:
    .venv/bin/python -m bench.map_bench [--rows 100000] [--runs 20] [--data /tmp/map-bench-100k]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from picmetric_core.history import HistoryQuery
from picmetric_core.map import place, records
from picmetric_core.service import PicMetricService
from picmetric_core.store.database import session_factory
from picmetric_core.store.orm import AnalysisRow
from tests.support.api import NoNetworks, app_client
from tests.support.map_rows import add_photos, themed_vectors
from tests.support.services import make_settings

LABELS = ("dog", "cat", "car", "boat", "tree", "person", "bird", "cup")


def seed(service: PicMetricService, rows: int) -> None:
    per_theme = max(1, rows // 500)
    vectors = themed_vectors(500, per_theme, spread=1.0)[:rows]
    sessions = session_factory(service.engine)
    for start in range(0, len(vectors), 5_000):
        names = [f"photo-{i}" for i in range(start, min(start + 5_000, len(vectors)))]
        labels = [LABELS[(i // per_theme) % len(LABELS)] for i in range(start, start + len(names))]
        with sessions.begin() as session:
            add_photos(session, names, vectors[start : start + len(names)], labels, first=start)


def stored_photos(service: PicMetricService) -> int:
    with session_factory(service.engine)() as session:
        return session.scalar(select(func.count(AnalysisRow.id))) or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--data", type=Path, help="keep the seeded database and store in this (new) folder")
    args = parser.parse_args()
    cpu = next(
        line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line
    )
    print(f"CPU: {cpu} × {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    kept = contextlib.nullcontext(str(args.data)) if args.data else tempfile.TemporaryDirectory()
    with kept as folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        settings = make_settings(Path(folder), similar_index="memory")
        service = PicMetricService(settings, NoNetworks())
        if (stored := stored_photos(service)) > 0:
            print(f"reusing the {stored} photos stored in {folder}")
        else:
            started = time.perf_counter()
            seed(service, args.rows)
            print(f"seeded {args.rows} photos in {time.perf_counter() - started:.0f} s")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        load_before = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        report = service.fit_map()
        fit_s, fit_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"fit ({report.method}, {report.photos} photos): {fit_s:.1f} s wall, {fit_cpu_s:.1f} s CPU (all threads), "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {report.clusters} clusters; "
            f"peak RSS {peak:.0f} MiB ({before:.0f} before)"
        )
        sessions = session_factory(service.engine)
        with sessions() as session:
            fit = records.current_fit(session, report.classifier)
        similar = service._similarity.similar  # the index the service asks, warmed by the first question
        vectors = themed_vectors(500, 1, seed=1, spread=1.0)
        with sessions() as session:  # a reused database holds the new photos of earlier runs
            first = (session.scalar(select(func.max(AnalysisRow.id))) or 0) + 10**6
        timings = []
        for run, vector in zip(range(args.runs), itertools.cycle(vectors), strict=False):
            with sessions.begin() as session:
                add_photos(session, [f"new-{first + run}"], vector[None, :], ["dog"], first=first + run)
            started = time.perf_counter()
            placed = place.place_unplaced(sessions, fit, similar, limit=1)
            timings.append((time.perf_counter() - started) * 1000)
            assert placed == 1
        rest = timings[1:] or timings
        print(
            f"place one new photo (load average {os.getloadavg()[0]:.1f}): the first {timings[0]:.1f} ms "
            f"(loads the fit's space), then median {statistics.median(rest):.1f} ms, max {max(rest):.1f} ms"
        )
        reads = []
        for _ in range(3):
            started = time.perf_counter()
            view = service.map_view(HistoryQuery(label="dog"))
            reads.append(time.perf_counter() - started)
        print(
            f"map read ({len(view.points)} points, {len(view.matching)} kept by the filter): "
            f"median {statistics.median(reads) * 1000:.0f} ms"
        )
        service.close()
        api_read(settings)


def api_read(settings) -> None:
    """``GET /v1/map`` (unfiltered: every point) on the app, as a client sees it."""
    with app_client(settings) as client:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            response = client.get("/v1/map")
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        points = len(response.json()["points"])
    print(
        f"GET /v1/map ({points} points, {len(response.content) / 2**20:.1f} MiB): "
        f"median {statistics.median(timings) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
