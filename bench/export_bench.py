"""How long do exports of many analyses take, and how large are they?

Seeds a SQLite database (in a temporary folder) with analyses holding 5 classes, a few objects and
faces each, and small stand-in objects in a local folder store, then times
:func:`picmetric_core.exports.export` for CSV, COCO and ZIP over every analysis and prints the time
and size of each. No network runs: exports read stored results.

Usage:
    .venv/bin/python bench/export_bench.py [--analyses 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from picmetric_core import exports
from picmetric_core.config import Settings
from picmetric_core.history import HistoryQuery
from picmetric_core.models.coco import COCO_CATEGORIES
from picmetric_core.results import LANDMARK_NAMES, Analysis, Box, Classification, Detection, Face, ModelInfo, Point
from picmetric_core.service import PicMetricService
from picmetric_core.store.objects import ObjectKeys
from picmetric_core.store.orm import AnalysisRow, analysis_row

MODELS = (
    ModelInfo("classifier", "EfficientNet-Lite0", "bench", False),
    ModelInfo("detector", "YOLOv3-tiny", "b", False),
)
OBJECT_BYTES = 40_000  # about a small JPEG


def synthetic(index: int, rng: random.Random) -> Analysis:
    def box() -> Box:
        x, y = rng.uniform(0, 500), rng.uniform(0, 350)
        return Box(x, y, x + rng.uniform(10, 140), y + rng.uniform(10, 130))

    return Analysis(
        md5=f"{index:032x}",
        width=640,
        height=480,
        classifications=tuple(Classification(f"class {k}", k, rng.random() / (k + 1)) for k in range(5)),
        detections=tuple(
            Detection(category.name, n, rng.uniform(0.1, 1), box())
            for n, category in enumerate(rng.sample(COCO_CATEGORIES, rng.randint(0, 6)))
        ),
        faces=tuple(
            Face(
                rng.uniform(0.8, 1),
                box(),
                {name: Point(rng.uniform(0, 640), rng.uniform(0, 480)) for name in LANDMARK_NAMES},
            )
            for _ in range(rng.randint(0, 2))
        ),
        models=MODELS,
    )


def synthetic_row(analysis: Analysis, created_at: datetime, filename: str) -> AnalysisRow:
    """The row of a synthetic analysis stored as an upload of a JPEG of ``OBJECT_BYTES``."""
    keys = ObjectKeys.for_image(analysis.md5, "image/jpeg")
    return analysis_row(
        analysis,
        created_at=created_at,
        source="upload",
        source_url=None,
        filename=filename,
        content_type="image/jpeg",
        byte_size=OBJECT_BYTES,
        original_key=keys.original,
        detections_key=keys.detections,
        faces_key=keys.faces,
        thumbnail_key=keys.thumbnail,
    )


def seed(service: PicMetricService, count: int) -> None:
    rng = random.Random(0)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    payload = rng.randbytes(OBJECT_BYTES)
    with service._sessions.begin() as session:  # a bench may seed rows directly
        for index in range(count):
            analysis = synthetic(index, rng)
            keys = ObjectKeys.for_image(analysis.md5, "image/jpeg")
            for key in (keys.original, keys.detections, keys.faces):
                service.store.put(key, payload, "image/jpeg")
            session.add(synthetic_row(analysis, start + timedelta(minutes=index), f"photo-{index}.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analyses", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(_env_file=None, data_dir=Path(folder), database_url=None, s3_bucket=None)
        service = PicMetricService(settings, analyzer=None)  # type: ignore[arg-type]  # exports run no network
        seed(service, args.analyses)
        print(f"{args.analyses:,} analyses in SQLite, {3 * OBJECT_BYTES // 1000} kB of objects each")
        for export_format in exports.EXPORT_FORMATS:
            seconds = []
            for _ in range(args.runs):
                began = time.perf_counter()
                data = exports.export(service, HistoryQuery(), export_format)
                seconds.append(time.perf_counter() - began)
            print(f"  {export_format:<5} median {statistics.median(seconds):6.2f} s   {len(data) / 1e6:8.1f} MB")
        service.close()


if __name__ == "__main__":
    main()
