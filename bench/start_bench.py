"""Start benchmark: a first start (networks built in Keras, engines chosen, models converted) against a later
start (the converted models read back, Keras and TensorFlow never imported), each in a fresh process.

    python bench/start_bench.py               # a fresh models folder, so the first start measures and converts
    python bench/start_bench.py --runs 50

Prints, per start: seconds to load the networks, whether TensorFlow was loaded, one 640×480 photo end to end
(decode + 3 networks, median of ``--runs`` after warming up) with the time inside OpenVINO's inference calls
(the rest is host work: decoding, resizing, the pyramid, NMS), and the process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, statistics, sys, time
started = time.perf_counter()
import picmetric_core
from pathlib import Path
from picmetric_core.config import Settings
from picmetric_core.intake.images import decode_for
from picmetric_core.models import engines
from picmetric_core.pipeline import get_analyzer

sys.path.insert(0, sys.argv[1])
from bench.cpu_runtime_bench import frame_bytes

settings = Settings(_env_file=None, models_dir=Path(sys.argv[2]), data_dir=Path(sys.argv[3]))
analyzer = get_analyzer(settings)
load_s = time.perf_counter() - started
frame = frame_bytes()
for _ in range(5):
    analyzer.analyze(decode_for(settings, frame))
engines.settled()
inside = []  # milliseconds inside OpenVINO's infer calls during each photo (the rest is host work)
infer = engines._Compiled.infer
def timed_infer(self, arrays):
    begun = time.perf_counter()
    try:
        return infer(self, arrays)
    finally:
        inside[-1] += (time.perf_counter() - begun) * 1000
engines._Compiled.infer = timed_infer
times = []
for _ in range(int(sys.argv[4])):
    inside.append(0.0)
    begun = time.perf_counter()
    analyzer.analyze(decode_for(settings, frame))
    times.append((time.perf_counter() - begun) * 1000)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps({
    "load_s": load_s, "median_ms": statistics.median(times), "peak_mib": peak, "inside_ms": statistics.median(inside),
    "tensorflow": "tensorflow" in sys.modules, "runtimes": [m.runtime for m in analyzer.models],
}))
"""


def start(models_dir: Path, data_dir: Path, runs: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), str(models_dir), str(data_dir), str(runs)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.cpu_runtime_bench import cpu_header

    print(cpu_header(), f"· load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="start-bench-") as temp:
        models_dir, data_dir = Path(temp) / "models", Path(temp) / "data"
        for name in ("first start (Keras, engines chosen)", "later start (converted models read back)"):
            result = start(models_dir, data_dir, args.runs)
            tensorflow = "loaded" if result["tensorflow"] else "not loaded"
            print(
                f"{name:42} load {result['load_s']:5.1f} s · TensorFlow {tensorflow:10}"
                f" · one photo {result['median_ms']:5.1f} ms (OpenVINO's infer {result['inside_ms']:4.1f} ms of it)"
                f" · peak RSS {result['peak_mib']:,.0f} MiB"
            )
        print("runtimes:", ", ".join(result["runtimes"]))


if __name__ == "__main__":
    main()
