"""MTCNN speed: the ``mtcnn`` package against KerasMtcnn on each installed Keras backend, on this machine.

Run ``python bench/mtcnn_backends.py``: one worker process per backend (the backend is fixed at
import), warm median of 20 runs per photo, printed as a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PERSON = Path("/usr/share/darknet/data/person.jpg")
RUNS = 20
WARMUP = 3


def photos() -> dict[str, np.ndarray]:
    """astronaut() at 512² and darknet's person.jpg resized to 640×480."""
    import skimage.data
    from PIL import Image

    person = Image.open(PERSON).convert("RGB").resize((640, 480), Image.Resampling.BILINEAR)
    return {"astronaut 512×512": skimage.data.astronaut(), "person 640×480": np.asarray(person)}


def warm_median_ms(run: Callable[[], object], runs: int = RUNS) -> float:
    """Median wall time of ``runs`` calls after ``WARMUP`` untimed ones, in milliseconds."""
    for _ in range(WARMUP):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def worker(with_reference: bool) -> dict[str, dict[str, float]]:
    """Timings of the detectors this process's backend can run, per detector and photo."""
    import keras

    from picmetric_core.models.mtcnn_keras import KerasMtcnn

    detectors = {f"KerasMtcnn on {keras.backend.backend()}": KerasMtcnn()}
    if with_reference:
        from picmetric_core.models.faces import MtcnnFaceDetector

        detectors["mtcnn package (TF)"] = MtcnnFaceDetector()
    return {
        name: {photo: warm_median_ms(lambda d=detector, p=rgb: d.detect_faces(p)) for photo, rgb in photos().items()}
        for name, detector in detectors.items()
    }


def run_backend(backend: str) -> dict[str, dict[str, float]]:
    """Runs this script as a worker under ``KERAS_BACKEND=backend`` and returns its timings."""
    args = [sys.executable, __file__, "--worker"] + (["--reference"] if backend == "tensorflow" else [])
    env = os.environ | {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help="time the current KERAS_BACKEND only")
    parser.add_argument("--reference", action="store_true", help="also time the mtcnn package (TensorFlow)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.reference)))
        return
    backends = ["tensorflow"] + (["jax"] if importlib.util.find_spec("jax") else [])
    results: dict[str, dict[str, float]] = {}
    for backend in backends:
        results |= run_backend(backend)
    names = list(photos())
    print(f"| detector | {' | '.join(names)} |")
    print(f"| --- |{' ---: |' * len(names)}")
    for detector, timings in sorted(results.items()):
        print(f"| {detector} | {' | '.join(f'{timings[n]:.1f} ms' for n in names)} |")


if __name__ == "__main__":
    main()
