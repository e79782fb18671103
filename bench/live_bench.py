"""The Live page's frame processor on a synthetic camera, in this process: processed frames per second and
p50/p95 latency at 640×480 and 320×240, and threads and RSS over ten start/stop cycles.

A feeder offers frames made from darknet's dog.jpg at ``--camera-fps`` (30, a webcam's rate); the
processor analyses the newest one at a time (detector + faces), the classifier runs on its own cadence.

    .venv/bin/python bench/live_bench.py [--seconds 20] [--input-side 416] [--no-classifier] [--compare]
                                         [--skip-cycles] [--cycles 10]
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOG = Path("/usr/share/darknet/data/dog.jpg")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def frames(width: int, height: int, count: int = 8) -> list[np.ndarray]:
    """The dog photo at ``width``×``height``, shifted a little each frame like a hand-held camera."""
    rgb = cv2.cvtColor(cv2.imread(str(DOG)), cv2.COLOR_BGR2RGB)
    base = cv2.resize(rgb, (width + 16, height + 16), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(base[i : i + height, i : i + width]) for i in range(0, 2 * count, 2)][:count]


def feed(processor, clip: list[np.ndarray], seconds: float, camera_fps: float) -> None:
    interval = 1 / camera_fps
    started = next_at = time.monotonic()
    index = 0
    while time.monotonic() - started < seconds:
        processor.offer(clip[index % len(clip)])
        index += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


def measure(analyzer, width: int, height: int, seconds: float, camera_fps: float, controls, **options):
    """Processed fps over the whole run; p50/p95 latency over every processed frame."""
    from picmetric_core.live.processor import LiveProcessor

    clip = frames(width, height)
    warm = LiveProcessor(analyzer, controls, **options)
    feed(warm, clip, 3, camera_fps)  # warm-up: new input shapes compile once
    warm.close()
    processor = LiveProcessor(analyzer, controls, **options)
    latencies: list[float] = []
    done = threading.Event()

    def collect() -> None:
        last = 0
        while not done.is_set():
            result = processor.wait_for_result(after=last, timeout=0.5)
            if result is not None:
                latencies.append(result.latency_ms)
                last = result.frame_number

    collector = threading.Thread(target=collect)
    collector.start()
    started = time.monotonic()
    feed(processor, clip, seconds, camera_fps)
    elapsed = time.monotonic() - started
    stats = processor.stats()
    done.set()
    collector.join()
    processor.close()
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (0.0, 0.0)
    return {
        "fps": stats.processed / elapsed,
        "p50": p50,
        "p95": p95,
        "processed": stats.processed,
        "dropped": stats.dropped,
    }


def cycles(analyzer, controls, count: int = 10) -> list[tuple[int, float]]:
    from picmetric_core.live.processor import LiveProcessor

    clip = frames(640, 480)
    readings = []
    for _ in range(count):
        processor = LiveProcessor(analyzer, controls)
        feed(processor, clip, 1.5, 30)
        started = time.monotonic()
        processor.close()
        assert not processor.running, "a worker outlived close()"
        released_s = time.monotonic() - started
        del processor
        gc.collect()
        readings.append((threading.active_count(), rss_mb(), released_s))
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--camera-fps", type=float, default=30)
    parser.add_argument("--input-side", type=int, default=416)
    parser.add_argument("--no-classifier", action="store_true")
    parser.add_argument("--skip-cycles", action="store_true")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--compare", action="store_true", help="also run the face network after the detector")
    args = parser.parse_args()

    from picmetric_core.config import get_settings
    from picmetric_core.live.processor import LiveControls
    from picmetric_core.runtime import shared_runtime

    settings = get_settings()
    loading = time.monotonic()
    analyzer = shared_runtime(settings).loader.start().analyzer(wait_s=600)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs)")
    print(
        "networks: " + ", ".join(f"{m.role} {m.name}" for m in analyzer.models),
        f"(loaded in {time.monotonic() - loading:.0f} s)",
    )
    controls = LiveControls(input_side=args.input_side)
    print(
        f"input side {controls.input_side}, camera {args.camera_fps:.0f} fps, {args.seconds:.0f} s each, "
        f"classifier {'off' if args.no_classifier else 'every 0.5 s'}"
    )
    print("| frame | detector + faces | processed fps | p50 ms | p95 ms | processed | dropped |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    classify_every_s = None if args.no_classifier else 0.5
    for width, height in ((640, 480), (320, 240)):
        for parallel in (True, False) if args.compare else (True,):
            row = measure(
                analyzer,
                width,
                height,
                args.seconds,
                args.camera_fps,
                controls,
                classify_every_s=classify_every_s,
                parallel=parallel,
            )
            print(
                f"| {width}×{height} | {'side by side' if parallel else 'one after the other'} | {row['fps']:.1f} | "
                f"{row['p50']:.0f} | {row['p95']:.0f} | {row['processed']} | {row['dropped']} |",
                flush=True,
            )
    if not args.skip_cycles:
        gc.collect()
        before = (threading.active_count(), rss_mb())
        readings = cycles(analyzer, controls, args.cycles)
        print(
            f"{len(readings)} start/stop cycles: threads {before[0]} → {readings[-1][0]}, RSS {before[1]:.0f} → "
            f"{readings[-1][1]:.0f} MB (after cycle 1: {readings[0][1]:.0f} MB), worker released in at most "
            f"{max(r[2] for r in readings) * 1000:.0f} ms"
        )
        print("per cycle (threads, RSS MB):", ", ".join(f"{t} {m:.0f}" for t, m, _ in readings))


if __name__ == "__main__":
    main()
