"""The GPU check of issue #6: Keras on JAX, correctness against the CPU reference, then latency and throughput.

On the GPU machine (see bench/README.md for the device command and its carry list):

    python3 bench/gpu_check.py --out $OUT

Here, without a GPU, the same code in miniature (JAX on the CPU, tiny counts; tests/models/test_batched_inference.py):

    .venv/bin/python bench/gpu_check.py --cpu-smoke

and, after a change of models, the CPU reference it compares with (TensorFlow on the CPU, float32):

    .venv/bin/python bench/gpu_check.py --write-reference   # bench/gpu_wheels.sh runs it

Only numpy, cv2, PIL, skimage, h5py, jax and keras (+ namex, optree, joblib, cloudpickle, lz4) are
imported on this path: picmetric_core.config (pydantic) and the weight-carrying packages are not,
their files come from ``.gpu_assets/`` (bench/gpu_wheels.sh fills it) or, here, from the venv.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / ".gpu_assets"
# Written here by bench/gpu_wheels.sh (TensorFlow on this CPU) and carried to the GPU machine with the weights.
REFERENCE = REPO / ".gpu_assets" / "gpu_reference.json"
DARKNET_DATA = Path("/usr/share/darknet/data")
PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "dog", "person")
BENCH_SIZE = (640, 480)
LIMITS = {"max_bytes": 1 << 27, "max_pixels": 1 << 27}

# GPU results against the CPU reference. float32 on a GPU is not bit-equal (TF32 convolutions,
# other reduction orders); mixed bfloat16 keeps about three significant digits.
FLOAT32_TOLERANCE = {"score": 0.02, "iou": 0.95, "pixels": 2.0}
BF16_TOLERANCE = {"score": 0.08, "iou": 0.85, "pixels": 4.0}
SURE_DETECTION = 0.5  # detections this confident must survive a precision change; weaker ones may not

sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Plan:
    """How much to run: the GPU sizes by default, tiny ones for the CPU smoke run."""

    runs: int = 30
    photos: tuple[str, ...] = PHOTO_NAMES
    throughput_images: int = 256
    one_at_a_time_images: int = 64
    batch_sizes: tuple[int, ...] = (32, 128)
    full_models: bool = True
    precisions: tuple[str, ...] = ("float32", "mixed_bfloat16")


SMOKE_PLAN = Plan(
    runs=2,
    photos=("astronaut", "dog"),
    throughput_images=4,
    one_at_a_time_images=2,
    batch_sizes=(2,),
    full_models=False,
    precisions=("float32", "mixed_bfloat16"),
)


def photo_bytes(name: str) -> bytes:
    """A test photo as file bytes: skimage's own, or darknet's (carried in .gpu_assets/photos on the GPU)."""
    if name in ("astronaut", "chelsea", "coffee"):
        from PIL import Image
        from skimage import data

        buffer = io.BytesIO()
        Image.fromarray(getattr(data, name)()).save(buffer, format="PNG")
        return buffer.getvalue()
    for folder in (ASSETS / "photos", DARKNET_DATA):
        if (folder / f"{name}.jpg").is_file():
            return (folder / f"{name}.jpg").read_bytes()
    raise FileNotFoundError(f"{name}.jpg: not in {ASSETS / 'photos'} nor {DARKNET_DATA}; run bench/gpu_wheels.sh")


def bench_photo(dog: bytes) -> bytes:
    """The engine benchmark's photo: dog.jpg at 640x480, JPEG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(dog)).convert("RGB").resize(BENCH_SIZE).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def shipped_file(carried: str, spec_key: str) -> Path:
    """A registry-shipped weights file: the carried copy, else the installed package's."""
    from picmetric_core.models import weights

    if (ASSETS / carried).is_file():
        return ASSETS / carried
    spec = next(s for s in weights.SHIPPED if s.key == spec_key)
    found = weights.locate(spec, Path())
    if found is None:
        raise FileNotFoundError(f"{carried}: not in {ASSETS} and {spec.package} is not installed")
    return found


def mtcnn_folder() -> Path:
    from picmetric_core.models.mtcnn_keras import weights_dir

    return ASSETS / "mtcnn" if (ASSETS / "mtcnn" / "pnet.lz4").is_file() else weights_dir()


def build_analyzer(models_dir: Path | None, precision: str, parallel: bool = False):
    """The three networks: the shipped defaults (``models_dir`` None) or full ResNet50 + YOLOv3-416."""
    from picmetric_core.models import efficientnet_lite, weights
    from picmetric_core.models.classifier import KerasClassifier, load_classifier, load_imagenet_names
    from picmetric_core.models.compiled import building_precision, use_device_nms
    from picmetric_core.models.mtcnn_keras import KerasMtcnn
    from picmetric_core.models.yolo import load_darknet_detector, load_detector
    from picmetric_core.pipeline import Analyzer
    from picmetric_core.results import ModelInfo

    # Settings.device_nms's variable, read here because this script runs where pydantic is not installed.
    device_nms = use_device_nms(os.environ.get("PICMETRIC_DEVICE_NMS", "").strip().lower() or "auto")
    with building_precision(precision):
        if models_dir is None:
            pth = shipped_file(weights.EFFICIENTNET_LITE0.filename, weights.EFFICIENTNET_LITE0.key)
            model = efficientnet_lite.load_efficientnet_lite(pth, efficientnet_lite.LITE0)
            info = ModelInfo("classifier", "EfficientNet-Lite0", str(pth), full=False, input_size=224)
            classifier = KerasClassifier(model, info, efficientnet_lite.preprocess, load_imagenet_names())
            tiny = shipped_file(weights.YOLOV3_TINY.filename, weights.YOLOV3_TINY.key)
            detector = load_darknet_detector(
                weights.YOLOV3_TINY_CFG, tiny, "YOLOv3-tiny", full=False, device_nms=device_nms
            )
        else:
            classifier, detector = load_classifier(models_dir), load_detector(models_dir, device_nms=device_nms)
    return Analyzer(classifier=classifier, detector=detector, faces=KerasMtcnn(mtcnn_folder()), parallel=parallel)


def analyses_of(analyzer, photos: dict[str, bytes]) -> dict[str, dict]:
    from picmetric_core.intake.images import decode_image

    return {name: analyzer.analyze(decode_image(data, **LIMITS)).to_dict() for name, data in photos.items()}


def differences(ours: dict, reference: dict, tolerance: dict[str, float]) -> list[str]:
    """What differs beyond ``tolerance`` between two analyses of one photo, as the viewer sees them."""
    from picmetric_core.filters import shown
    from picmetric_core.results import Analysis

    a, b = shown(Analysis.from_dict(ours)), shown(Analysis.from_dict(reference))
    problems = []
    if a.classifications[0].label != b.classifications[0].label:
        problems.append(f"top-1 {a.classifications[0].label!r} != {b.classifications[0].label!r}")
    problems += _detection_differences(a.detections, b.detections, tolerance)
    sure_a = [f for f in a.faces if f.score >= 0.95]
    sure_b = [f for f in b.faces if f.score >= 0.95]
    if len(sure_a) != len(sure_b):
        problems.append(f"{len(sure_a)} confident faces, reference {len(sure_b)}")
    for face in sure_b:
        twin = max(a.faces, key=lambda f: f.box.iou(face.box), default=None)
        gap = max(abs(x - y) for x, y in zip(twin.box.as_list(), face.box.as_list(), strict=True)) if twin else None
        if gap is None or gap > tolerance["pixels"]:
            problems.append(f"face at {face.box.as_list()} moved {gap} px")
    return problems


def _detection_differences(ours, reference, tolerance: dict[str, float]) -> list[str]:
    problems = []
    for det in reference:
        same = [d for d in ours if d.label == det.label and d.box.iou(det.box) >= tolerance["iou"]]
        if not same:
            if det.score >= SURE_DETECTION:
                problems.append(f"missing {det.label} {det.score:.3f}")
            continue
        score = max(same, key=lambda d: d.box.iou(det.box)).score
        if abs(score - det.score) > tolerance["score"]:
            problems.append(f"{det.label} score {score:.3f} vs {det.score:.3f}")
    extra = [d for d in ours if d.score >= SURE_DETECTION and not any(d.label == r.label for r in reference)]
    problems += [f"extra {d.label} {d.score:.3f}" for d in extra]
    return problems


def check(label: str, ours: dict[str, dict], reference: dict[str, dict], tolerance: dict[str, float]) -> bool:
    ok = True
    for name, analysis in ours.items():
        problems = differences(analysis, reference[name], tolerance)
        ok = ok and not problems
        print(f"  {label:<38} {name:<10} {'ok' if not problems else 'DIFFERS: ' + '; '.join(problems)}")
    return ok


def median_ms(run: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def latency(analyzer, data: bytes, runs: int) -> dict[str, float]:
    """Warm medians: each network, analyze() end to end, and overlays drawn and PNG-encoded apart."""
    from picmetric_core.filters import shown
    from picmetric_core.intake.images import decode_image
    from picmetric_core.overlays import annotate_detections, annotate_faces, encode_png

    image = decode_image(data, **LIMITS)
    for _ in range(3):
        analysis = analyzer.analyze(image)
    stages = [analyzer.analyze(image).timings_ms for _ in range(runs)]
    result = {name: statistics.median(t[name] for t in stages) for name in ("classifier", "detector", "faces")}
    result["end_to_end"] = median_ms(lambda: analyzer.analyze(image), runs)
    visible = shown(analysis)
    drawn = annotate_detections(image.rgb, visible.detections)
    result["overlay_draw"] = median_ms(
        lambda: (annotate_detections(image.rgb, visible.detections), annotate_faces(image.rgb, visible.faces)), runs
    )
    result["overlay_png"] = median_ms(lambda: (encode_png(drawn), encode_png(drawn)), runs)
    result["decode"] = median_ms(lambda: decode_image(data, **LIMITS), runs)
    return result


def throughput(analyzer, data: bytes, plan: Plan) -> dict[str, float]:
    """Images/s through all three networks from decoded images: one at a time, then analyze_many per batch size."""
    images = [_decoded(data) for _ in range(plan.throughput_images)]
    alone = images[: plan.one_at_a_time_images]
    rates = {"one_at_a_time": len(alone) / (median_ms(lambda: [analyzer.analyze(i) for i in alone], 1) / 1000)}
    for batch in plan.batch_sizes:
        analyzer.analyze_many(images[:batch], batch_size=batch)  # compile this batch's shapes first
        seconds = median_ms(lambda b=batch: analyzer.analyze_many(images, b), 1) / 1000
        rates[f"batch_{batch}"] = len(images) / seconds
    return rates


def print_table(title: str, rows: dict[str, dict[str, float]], unit: str) -> None:
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    print(f"\n{title} ({unit})")
    widths = [max(len(c) + 2, 10) for c in columns]
    print(f"  {'':<28}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for name, row in rows.items():
        cells = (f"{row.get(c, float('nan')):>{w}.1f}" for c, w in zip(columns, widths, strict=True))
        print(f"  {name:<28}" + "".join(cells))


def run_check(plan: Plan, out: Path, reference_path: Path = REFERENCE) -> int:
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"KERAS_BACKEND must be jax here, got {keras.backend.backend()}")
    device = str(jax.devices()[0])
    print(
        f"PicMetric GPU check: keras {keras.__version__} on jax {jax.__version__}, device {device}, "
        f"Python {platform.python_version()}"
    )
    photos = {name: photo_bytes(name) for name in plan.photos}
    reference = json.loads(reference_path.read_text())
    report: dict = {"device": device, "checks": {}, "latency_ms": {}, "throughput_img_s": {}}
    started = time.perf_counter()

    print("\ncorrectness (shown results, against the TensorFlow-CPU float32 reference)")
    default = {p: build_analyzer(None, p) for p in plan.precisions}
    report["detector_nms_on_device"] = default["float32"].detector.device_nms
    print(f"YOLO threshold + NMS on the device: {report['detector_nms_on_device']}")
    float32 = analyses_of(default["float32"], photos)
    report["checks"]["float32_vs_cpu"] = check(
        "default float32 vs CPU reference", float32, reference, FLOAT32_TOLERANCE
    )
    if "mixed_bfloat16" in default:
        bf16 = analyses_of(default["mixed_bfloat16"], photos)
        report["checks"]["bf16_vs_float32"] = check("default mixed_bfloat16 vs float32", bf16, float32, BF16_TOLERANCE)
    report["checks"]["analyze_many_vs_analyze"] = check_batched(default["float32"], photos)
    print(f"  ({time.perf_counter() - started:.0f} s so far)", flush=True)

    sample = bench_photo(photos["dog"])
    suites = {f"default {p}": (None, p) for p in plan.precisions}
    full_dir = None
    if plan.full_models:
        from tests.support.synthetic_weights import make_full_models_dir

        full_dir = make_full_models_dir(Path(tempfile.mkdtemp(prefix="picmetric-full-")))
        suites |= {f"full R50+Y416 {p}": (full_dir, p) for p in plan.precisions}
    for label, (models_dir, precision) in suites.items():
        analyzer = default[precision] if models_dir is None else build_analyzer(models_dir, precision)
        report["latency_ms"][label] = latency(analyzer, sample, plan.runs)
        report["latency_ms"][label]["end_to_end_parallel"] = parallel_latency(analyzer, sample, plan.runs)
        report["throughput_img_s"][label] = throughput(analyzer, sample, plan)
        figures = report["latency_ms"][label] | report["throughput_img_s"][label]
        print(f"  measured {label} ({time.perf_counter() - started:.0f} s so far): {json.dumps(figures)}", flush=True)
        save(report, out)  # after each suite, so a run cut short still leaves its figures
    print_table("warm latency, one 640x480 photo, decoded image to results", report["latency_ms"], "ms, median")
    print_table("throughput, all three networks", report["throughput_img_s"], "images/s")
    print(f"\nwrote {save(report, out)}")
    return 0 if all(report["checks"].values()) else 1


def save(report: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=2))
    return path


def parallel_latency(analyzer, data: bytes, runs: int) -> float:
    """analyze() with the three networks on three threads, sharing the compiled models."""
    from picmetric_core.pipeline import Analyzer

    parallel = Analyzer(analyzer.classifier, analyzer.detector, analyzer.faces, parallel=True)
    image = _decoded(data)
    for _ in range(3):
        parallel.analyze(image)
    return median_ms(lambda: parallel.analyze(image), runs)


def _decoded(data: bytes):
    from picmetric_core.intake.images import decode_image

    return decode_image(data, **LIMITS)


def check_batched(analyzer, photos: dict[str, bytes]) -> bool:
    """analyze_many on the mixed-size photos equals analyze on each, on this device."""
    names = list(photos)
    images = [_decoded(photos[n]) for n in names]
    together = analyzer.analyze_many(images, batch_size=len(images))
    alone = {n: analyzer.analyze(i).to_dict() for n, i in zip(names, images, strict=True)}
    return check(
        "analyze_many vs analyze",
        dict(zip(names, (a.to_dict() for a in together), strict=True)),
        alone,
        {"score": 1e-3, "iou": 0.99, "pixels": 0.5},
    )


def write_reference(path: Path = REFERENCE) -> int:
    """The CPU reference: the default models, float32, on TensorFlow (the CPU default)."""
    photos = {name: photo_bytes(name) for name in PHOTO_NAMES}
    analyses = analyses_of(build_analyzer(None, "float32"), photos)
    for doc in analyses.values():
        doc["timings_ms"] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(analyses, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or tempfile.mkdtemp()))
    parser.add_argument("--cpu-smoke", action="store_true", help="JAX on the CPU, tiny counts, default models")
    parser.add_argument("--write-reference", action="store_true", help="write the CPU reference (TF) and stop")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help=f"the CPU reference (default {REFERENCE})")
    parser.add_argument("--no-full", action="store_true", help="skip full ResNet50 + YOLOv3-416")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.write_reference:
        return write_reference(args.reference)
    os.environ["KERAS_BACKEND"] = "jax"
    if args.cpu_smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    plan = SMOKE_PLAN if args.cpu_smoke else Plan(full_models=not args.no_full)
    return run_check(plan, args.out, args.reference)


if __name__ == "__main__":
    sys.exit(main())
