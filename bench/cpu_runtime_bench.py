"""CPU runtime benchmark (issue #21): every engine side by side, in one run, on this machine.

    python bench/cpu_runtime_bench.py            # default (shipped) models
    python bench/cpu_runtime_bench.py --runs 50

Prints, all from the same process and interleaved round by round (so a busy neighbour slows every column alike):

1. each network alone, batch 1, on a 640×480 photo, for every engine this machine runs (Keras float32,
   Keras mixed_bfloat16, OpenVINO float32 / bfloat16), with each engine's fidelity-gate figures against
   float32 on the suite's photos (darknet's seven and scikit-image's astronaut);
2. what ``PICMETRIC_PRECISION=auto`` picked here, and why;
3. one photo end to end (decode + 3 networks): float32 (the old default) against auto, the networks on
   three threads and one after another; detector + faces alone on a 640×480 frame (the live budget);
4. the usual peer pipeline (OpenCV DNN YOLOv3-tiny + the ``mtcnn`` package + the same classifier in Keras
   float32) against ours, interleaved;
5. throughput one at a time and ``analyze_many``; peak RSS.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DARKNET = Path("/usr/share/darknet/data")
BENCH_LIBS = Path(__file__).resolve().parents[1] / ".bench-libs"  # bench/onnx_side.sh
CALIBRATION = ("chelsea", "coffee", "rocket", "cat")  # scikit-image's, never the test photos
SUITE_PHOTOS = ("dog", "person", "horses", "eagle", "giraffe", "kite", "scream")
FRAME = (640, 480)


def suite_photos() -> list[tuple[str, np.ndarray]]:
    import skimage.data

    photos = [(name, np.asarray(Image.open(DARKNET / f"{name}.jpg").convert("RGB"))) for name in SUITE_PHOTOS
              if (DARKNET / f"{name}.jpg").is_file()]  # fmt: skip
    return [*photos, ("astronaut", np.ascontiguousarray(skimage.data.astronaut()))]


def frame_bytes() -> bytes:
    source = DARKNET / "dog.jpg"
    image = Image.open(source).convert("RGB") if source.is_file() else Image.fromarray(suite_photos()[-1][1])
    buffer = io.BytesIO()
    image.resize(FRAME).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def cpu_header() -> str:
    from picmetric_core.models import engines

    flags = sorted(engines.cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"})
    versions = f"OpenVINO {engines.openvino_version() or 'not available'}"
    return f"CPU: {engines.cpu_model()} · {engines.instruction_set()} ({' '.join(flags)}) · {versions}"


def interleaved(runs: int, candidates: dict[str, Callable[[], object]], warm: int = 3) -> dict[str, list[float]]:
    """Milliseconds of each candidate, one call of each per round."""
    from picmetric_core.models import engines

    for run in candidates.values():
        for _ in range(warm):
            run()
    engines.settled()  # OpenVINO's models compiled for the shapes seen again are ready
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples):6.1f} ms (p90 {np.percentile(samples, 90):6.1f})"


def per_network(runs: int, models_dir: Path) -> None:
    from picmetric_core.models import choice, engines
    from picmetric_core.models.classifier import load_classifier
    from picmetric_core.models.compiled import building_precision
    from picmetric_core.models.faces import load_face_detector
    from picmetric_core.models.yolo import load_detector

    frame = np.asarray(Image.open(io.BytesIO(frame_bytes())).convert("RGB"))
    photos = suite_photos()
    built = {
        "classifier": load_classifier(models_dir),
        "detector": load_detector(models_dir, device_nms=False),
        "faces": load_face_detector("keras"),
    }
    with building_precision("mixed_bfloat16"):
        mixed = {"classifier": load_classifier(models_dir), "detector": load_detector(models_dir, device_nms=False)}
    print("\n== 1. each network alone, batch 1, 640x480 photo; fidelity against float32 on", len(photos), "photos ==")
    for role, network in built.items():
        runners = {"float32": network.run_on(engines.KERAS_FLOAT32)}
        if role in mixed:
            runners["mixed_bfloat16"] = mixed[role].run_on(engines.KERAS_MIXED_BFLOAT16)
        for engine in (engines.OPENVINO_FLOAT32, engines.OPENVINO_BFLOAT16):
            if engines.runnable(engine):
                runners[engine.name] = network.run_on(engine, models_dir)
        runners.update(onnx_runners(role, network))
        gate_role = choice.ROLES[role]
        times = interleaved(runs, {name: (lambda n=net, r=gate_role: r.run(n, frame)) for name, net in runners.items()})
        print(f"-- {role}: {network.info.name}")
        for name, net in runners.items():
            verdict = choice.gate(gate_role, runners["float32"], net, photos) if name != "float32" else None
            gate_text = "reference" if verdict is None else ("PASS " if verdict.passed else "FAIL ") + verdict.summary()
            print(f"   {name:<18} {ms(times[name])}   gate: {gate_text}")
            if verdict is not None and not verdict.passed:
                print("      " + "; ".join(verdict.failures[:4]))


def onnx_runners(role: str, network) -> dict[str, object]:
    """ONNX Runtime float32 and int8 (static, calibrated on scikit-image photos) for the classifier and detector.

    Only where bench/onnx_side.sh installed it; the faces' P-Net (free height and width) is not exported.
    """
    if role == "faces" or not BENCH_LIBS.is_dir():
        return {}
    sys.path.insert(0, str(BENCH_LIBS))
    import onnx
    import onnxruntime as ort
    import skimage.data
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from picmetric_core.models.classifier import center_crop
    from picmetric_core.models.yolo import letterbox

    photos = [np.ascontiguousarray(getattr(skimage.data, name)()) for name in CALIBRATION]
    if role == "classifier":
        model, size = network._features_model, network.input_size
        inputs = [network._preprocess(center_crop(p, size, network.resize_to)[None]) for p in photos]
    else:
        model, size = network.model, network.input_size
        inputs = [letterbox(p, size)[0][None] for p in photos]
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="x"),)
    traced = tf.function(lambda x: model(x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(traced, input_signature=spec, opset=17)

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self._left = iter([{"x": np.asarray(x, np.float32)} for x in inputs])

        def get_next(self):
            return next(self._left, None)

    runners = {}
    with tempfile.TemporaryDirectory() as scratch:
        plain, quantised = Path(scratch) / "f32.onnx", Path(scratch) / "int8.onnx"
        onnx.save(proto, plain)
        quantize_static(plain, quantised, Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)  # fmt: skip
        for name, path in (("onnxruntime_float32", plain), ("onnxruntime_int8", quantised)):
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            runners[name] = with_forward(network, lambda batch, s=session: s.run(None, {"x": batch})[0], name)
    return runners


def with_forward(network, forward, label: str):
    """``network`` with its Keras forward swapped for ``forward`` (a bench-only engine)."""
    clone = copy.copy(network)
    setattr(clone, "_forward" if hasattr(network, "_features_model") else "_infer", forward)
    clone.info = dataclasses.replace(network.info, runtime=label)
    return clone


def end_to_end(runs: int, models_dir: Path, count: int) -> None:
    from picmetric_core.config import Settings
    from picmetric_core.intake.images import decode_for
    from picmetric_core.pipeline import load_analyzer

    settings = Settings(models_dir=models_dir)
    data = frame_bytes()
    analyzers = {
        "float32, 3 threads (old default)": load_analyzer(models_dir, precision="float32", parallel=True),
        "auto, 3 threads": load_analyzer(models_dir, precision="auto", parallel=True),
        "auto, one after another": load_analyzer(models_dir, precision="auto", parallel=False),
    }
    auto = analyzers["auto, 3 threads"]
    print("\n== 2. what auto picked here ==")
    for info in auto.models:
        print(f"   {info.role:<10} {info.name:<22} {info.runtime}")
    print("   (per-engine trials: engines.json in the models folder; load seconds", auto.load_seconds, ")")

    print(f"\n== 3. one photo end to end (decode + 3 networks), {FRAME[0]}x{FRAME[1]}, {runs} interleaved rounds ==")
    times = interleaved(
        runs, {name: (lambda a=a: a.analyze(decode_for(settings, data))) for name, a in analyzers.items()}
    )
    for name, samples in times.items():
        print(f"   {name:<34} {ms(samples)}")
    frame = decode_for(settings, data).rgb
    old, new = analyzers["float32, 3 threads (old default)"], analyzers["auto, one after another"]
    live = interleaved(
        runs,
        {
            "float32": lambda: (old.detector.detect(frame, 0.25, 0.45), old.faces.detect_faces(frame)),
            "auto": lambda: (new.detector.detect(frame, 0.25, 0.45), new.faces.detect_faces(frame)),
        },
    )
    print(
        f"   detector + faces on a {FRAME[0]}x{FRAME[1]} frame: float32 {ms(live['float32'])}  auto {ms(live['auto'])}"
    )
    peer(runs, old, analyzers, settings, data)
    print(f"\n== 5. throughput, {count} photos from bytes (decode included) ==")
    for name in ("float32, 3 threads (old default)", "auto, 3 threads", "auto, one after another"):
        analyzer = analyzers[name]
        analyzer.analyze_many([decode_for(settings, data) for _ in range(16)], batch_size=16)
        started = time.perf_counter()
        for _ in range(count):
            analyzer.analyze(decode_for(settings, data))
        one = count / (time.perf_counter() - started)
        started = time.perf_counter()
        analyzer.analyze_many([decode_for(settings, data) for _ in range(count)], batch_size=16)
        many = count / (time.perf_counter() - started)
        print(f"   {name:<34} one at a time {one:6.1f} photos/s   analyze_many b=16 {many:6.1f} photos/s")


def peer(runs: int, reference, analyzers: dict, settings, data: bytes) -> None:
    """OpenCV DNN YOLOv3-tiny + the mtcnn package + the same classifier (Keras float32), one after another."""
    import cv2
    from mtcnn import MTCNN

    from picmetric_core.intake.images import decode_for
    from picmetric_core.models import weights

    tiny = weights.locate(weights.YOLOV3_TINY, Path())
    net = cv2.dnn.readNetFromDarknet(str(weights.YOLOV3_TINY_CFG), str(tiny))
    layers = net.getUnconnectedOutLayersNames()
    faces = MTCNN()

    def peer_pipeline() -> None:
        rgb = decode_for(settings, data).rgb
        reference.classifier.classify(rgb)
        net.setInput(cv2.dnn.blobFromImage(rgb, 1 / 255, (416, 416), swapRB=False, crop=False))
        rows = np.concatenate([o.reshape(-1, o.shape[-1]) for o in net.forward(layers)])
        scores = rows[:, 5:].max(axis=1) * rows[:, 4]
        keep = scores > 0.25
        boxes = [[float(x - w / 2), float(y - h / 2), float(w), float(h)] for x, y, w, h in rows[keep, :4]]
        cv2.dnn.NMSBoxes(boxes, scores[keep].tolist(), 0.25, 0.45)
        faces.detect_faces(rgb)

    ours = analyzers["auto, one after another"]
    times = interleaved(runs, {"peer": peer_pipeline, "ours": lambda: ours.analyze(decode_for(settings, data))})
    ratio = statistics.median(times["peer"]) / statistics.median(times["ours"])
    print("\n== 4. the usual peer pipeline (OpenCV DNN YOLOv3-tiny + mtcnn package + same classifier, float32) ==")
    print(f"   peer {ms(times['peer'])}   ours (auto) {ms(times['ours'])}   ours is {ratio:.2f}x faster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--count", type=int, default=64, help="photos in each throughput run")
    parser.add_argument("--models-dir", type=Path, help="default: a fresh temporary folder (shipped models)")
    args = parser.parse_args(argv)
    print(cpu_header())
    with tempfile.TemporaryDirectory() as scratch:
        models_dir = args.models_dir or Path(scratch)
        per_network(args.runs, models_dir)
        end_to_end(args.runs, models_dir, args.count)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"\npeak RSS (every engine of every network loaded in one process): {peak_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
