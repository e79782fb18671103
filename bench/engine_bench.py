"""Engine benchmark: prints cold start, warm per-stage latency, batch throughput and peak RSS.

    python bench/engine_bench.py              # offline default models
    python bench/engine_bench.py --full       # also full ResNet50 + YOLOv3-416 (random weights)
    python bench/engine_bench.py --sequential # the three networks one after another (default: concurrent)

Throughput compares one-at-a-time ``analyze`` with ``analyze_many`` in the same run, both from bytes.

Random weights measure speed honestly: the arithmetic does not depend on the values.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# Lets the synthetic weight writers (test helpers, not runtime code) be imported from tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHOTO_SIZE = (640, 480)
DOG = Path("/usr/share/darknet/data/dog.jpg")


def sample_photo_bytes() -> bytes:
    """A real 640×480 JPEG: darknet's dog.jpg when installed, else skimage's astronaut."""
    if DOG.is_file():
        image = Image.open(DOG).convert("RGB")
    else:
        from skimage import data

        image = Image.fromarray(data.astronaut())
    buffer = io.BytesIO()
    image.resize(PHOTO_SIZE).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def cold_start_seconds(models_dir: Path, photo: Path) -> float:
    """Process start to first result, in a fresh interpreter."""
    code = (
        "from picmetric_core.config import Settings;"
        "from picmetric_core.intake.images import decode_for;"
        "from picmetric_core.pipeline import get_analyzer;"
        f"s=Settings(models_dir={str(models_dir)!r});"
        f"get_analyzer(s).analyze(decode_for(s, open({str(photo)!r},'rb').read()));print('ok')"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples):7.1f} ms (p90 {np.percentile(samples, 90):6.1f})"


def bench_models(
    label: str,
    models_dir: Path,
    photo_bytes: bytes,
    runs: int,
    count: int,
    batch_sizes: tuple[int, ...] = (8, 16),
    parallel: bool = True,
) -> None:
    from picmetric_core.config import Settings
    from picmetric_core.intake.images import decode_for
    from picmetric_core.pipeline import load_analyzer

    settings = Settings(models_dir=models_dir)
    with tempfile.NamedTemporaryFile(suffix=".jpg") as handle:
        handle.write(photo_bytes)
        handle.flush()
        cold = cold_start_seconds(models_dir, Path(handle.name))

    started = time.perf_counter()
    analyzer = load_analyzer(
        models_dir, top_k=settings.classifier_top_k, parallel=parallel, classifier=settings.classifier
    )
    load_s = time.perf_counter() - started
    image = decode_for(settings, photo_bytes)
    for _ in range(3):
        analyzer.analyze(image)

    stages: dict[str, list[float]] = {}
    end_to_end: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        decoded = decode_for(settings, photo_bytes)
        analysis = analyzer.analyze(decoded)
        end_to_end.append((time.perf_counter() - started) * 1000)
        for stage, ms in analysis.timings_ms.items():
            stages.setdefault(stage, []).append(ms)

    print(f"\n== {label} ==")
    print("models: " + "; ".join(f"{m.role}={m.name}" for m in analyzer.models))
    print(f"cold start (process start -> first result): {cold:6.2f} s")
    print(f"model load in a warm process:              {load_s:6.2f} s")
    for stage in ("classifier", "detector", "faces"):
        print(f"warm {stage:<11} median {median_ms(stages[stage])}")
    print(f"warm end-to-end (decode + 3 networks), {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}: median {median_ms(end_to_end)}")
    print_throughput(analyzer, lambda: decode_for(settings, photo_bytes), count, batch_sizes)


def images_per_second(run: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def print_throughput(analyzer, decode: Callable[[], object], count: int, batch_sizes: tuple[int, ...]) -> None:
    """One at a time vs ``analyze_many``, both from bytes (decode included), in this same run."""
    for batch_size in batch_sizes:  # compile every batch shape before timing
        analyzer.analyze_many([decode() for _ in range(batch_size)], batch_size=batch_size)
    one = images_per_second(lambda: [analyzer.analyze(decode()) for _ in range(count)], count)
    print(f"throughput one at a time:        {one:6.2f} images/s over {count} images (decode included)")
    for batch_size in batch_sizes:
        rate = images_per_second(lambda b=batch_size: analyzer.analyze_many([decode() for _ in range(count)], b), count)
        print(f"throughput analyze_many b={batch_size:<3}:   {rate:6.2f} images/s = {rate / one:4.2f}x one at a time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32, help="images in each throughput run")
    parser.add_argument("--batch-sizes", default="8,16", help="analyze_many batch sizes, comma-separated")
    parser.add_argument("--sequential", action="store_true", help="run the three networks one after another")
    parser.add_argument("--full", action="store_true", help="also full ResNet50 + YOLOv3-416")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    photo = sample_photo_bytes()
    sizes = tuple(int(size) for size in args.batch_sizes.split(","))
    print(f"PicMetric engine benchmark — {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as empty:
        bench_models("offline default models", Path(empty), photo, args.runs, args.batch, sizes, not args.sequential)
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            from tests.support.synthetic_weights import make_full_models_dir

            full_dir = make_full_models_dir(Path(tmp))
            label = "full ResNet50 + YOLOv3-416 (random weights)"
            bench_models(label, full_dir, photo, args.runs, args.batch, sizes, not args.sequential)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
