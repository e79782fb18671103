"""Where MTCNN's time goes on this CPU: each stage of one photo, for each engine this machine runs.

    .venv/bin/python bench/mtcnn_stages.py              # 640x480 dog.jpg and the astronaut, 30 rounds
    .venv/bin/python bench/mtcnn_stages.py --runs 50

Stages, in the order ``KerasMtcnn`` runs them: the pyramid (area averages from one table of sums), P-Net on
its canvases, P-Net's boxes and NMS, the 24×24 crops, R-Net, the 48×48 crops, O-Net; then the whole
``detect_faces`` call. Engines are timed in turns, round by round, so a busy moment slows each alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import picmetric_core  # noqa: F401  (loads aiortc's SRTP library before TensorFlow)

DARKNET = Path("/usr/share/darknet/data")


def photos():
    import numpy as np
    import skimage.data
    from PIL import Image

    dog = DARKNET / "dog.jpg"
    found = [("astronaut 512x512", np.ascontiguousarray(skimage.data.astronaut()))]
    if dog.is_file():
        found.insert(0, ("dog.jpg 640x480", np.asarray(Image.open(dog).convert("RGB").resize((640, 480)))))
    return found


def stages(detector, rgb) -> dict[str, Callable[[], object]]:
    """The stages as separate calls, each fed by the one before (run once to get their inputs)."""
    import numpy as np

    from picmetric_core.models import mtcnn_keras as mk

    levels = mk._pyramid(rgb)
    maps = detector._pnet_maps([[level for _, level in levels]])[0]

    def proposals():
        per_scale = [
            mk.package_nms(mk.pnet_boxes(heads[..., :4], heads[..., 4], scale), mk.NMS_PNET_SCALE)
            for (scale, _), heads in zip(levels, maps, strict=True)
        ]
        return mk.to_square(mk.package_nms(mk.sort_by_score(np.concatenate(per_scale)), mk.NMS_PNET_ALL))

    boxes = proposals()
    patches24 = mk._patches([rgb], [boxes], 24)
    refined = detector._refined([rgb], [boxes])[0]
    patches48 = mk._patches([rgb], [refined], 48) if len(refined) else None
    timed = {
        "pyramid": lambda: mk._pyramid(rgb),
        "P-Net": lambda: detector._pnet_maps([[level for _, level in levels]]),
        "P-Net boxes+NMS": proposals,
        "crops 24": lambda: mk._patches([rgb], [boxes], 24),
        "R-Net": lambda: mk._predict_patches(detector._predicts["rnet"], patches24),
    }
    if patches48 is not None:
        timed["crops 48"] = lambda: mk._patches([rgb], [refined], 48)
        timed["O-Net"] = lambda: mk._predict_patches(detector._predicts["onet"], patches48)
    timed["detect_faces"] = lambda: detector.detect_faces(rgb)
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    from picmetric_core.models import engines
    from picmetric_core.models.mtcnn_keras import KerasMtcnn

    flags = sorted(engines.cpu_flags() & {"avx512f", "avx512_bf16", "amx_bf16"})
    print(f"CPU: {engines.cpu_model()} · {engines.instruction_set()} ({' '.join(flags)})")
    base = KerasMtcnn()
    artefacts = Path(tempfile.mkdtemp(prefix="mtcnn-stages-"))
    candidates = (engines.KERAS_FLOAT32, engines.OPENVINO_FLOAT32, engines.OPENVINO_BFLOAT16)
    detectors = {engine.name: base.run_on(engine, artefacts) for engine in candidates if engines.runnable(engine)}
    for label, rgb in photos():
        calls = {name: stages(detector, rgb) for name, detector in detectors.items()}
        for per_engine in calls.values():  # warm: OpenVINO compiles a shape seen again, in the background
            for _ in range(3):
                for run in per_engine.values():
                    run()
        engines.settled()  # the models compiled for these shapes are ready
        times = {name: {stage: [] for stage in per_engine} for name, per_engine in calls.items()}
        for _ in range(args.runs):
            for name, per_engine in calls.items():
                for stage, run in per_engine.items():
                    started = time.perf_counter()
                    run()
                    times[name][stage].append((time.perf_counter() - started) * 1000)
        faces = len(next(iter(detectors.values())).detect_faces(rgb))
        print(f"\n== {label} ({faces} face(s)), median ms of {args.runs} ==")
        names = list(times)
        print(f"   {'stage':<18}" + "".join(f"{name:>20}" for name in names))
        for stage in times[names[0]]:
            row = "".join(f"{statistics.median(times[name][stage]):20.2f}" for name in names)
            print(f"   {stage:<18}{row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
