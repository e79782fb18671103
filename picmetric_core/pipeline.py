"""One image through the three networks: ``Analyzer.analyze(image) -> Analysis``.

Models load once per process (:func:`get_analyzer`) and are shared by every thread; each model
serialises its own inference, so three threads can run the three networks at the same time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from picmetric_core.config import Settings
from picmetric_core.filters import RAW_DETECTION_SCORE, RAW_NMS_IOU
from picmetric_core.images import DecodedImage
from picmetric_core.models.base import Classifier, Detector, FaceDetector
from picmetric_core.results import Analysis, ModelInfo

StageCallback = Callable[[str], None]
"""Told the name of each step ("classifier", "detector", "faces", ...) as it starts."""

NETWORK_STAGES = ("classifier", "detector", "faces")


@dataclass(frozen=True)
class RuntimeInfo:
    backend: str
    device: str
    load_seconds: dict[str, float]


@dataclass
class Analyzer:
    """The three networks, loaded. Thread-safe."""

    classifier: Classifier
    detector: Detector
    faces: FaceDetector
    top_k: int = 5
    parallel: bool = False
    load_seconds: dict[str, float] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.parallel:
            self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="picmetric-net")

    @property
    def models(self) -> tuple[ModelInfo, ...]:
        return (self.classifier.info, self.detector.info, self.faces.info)

    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis:
        """Run all three networks on ``image``; raw results are kept at low thresholds.

        ``on_stage`` is told each network's name as it starts (all three at once when parallel).

        Example:
            >>> analysis = get_analyzer(Settings()).analyze(decode_image(open("dog.jpg", "rb").read(), ...))
            >>> sorted({d.label for d in shown(analysis).detections})
            ['bicycle', 'car', 'dog', 'truck']
        """
        rgb = image.rgb
        stages = {
            "classifier": lambda: self.classifier.classify(rgb, top_k=self.top_k),
            "detector": lambda: self.detector.detect(
                rgb, score_threshold=RAW_DETECTION_SCORE, iou_threshold=RAW_NMS_IOU
            ),
            "faces": lambda: self.faces.detect_faces(rgb),
        }
        report = on_stage or (lambda _stage: None)
        started = time.perf_counter()
        if self._pool is not None:
            for name in stages:
                report(name)
            futures = {name: self._pool.submit(_timed, run) for name, run in stages.items()}
            outcomes = {name: future.result() for name, future in futures.items()}
        else:
            outcomes = {}
            for name, run in stages.items():
                report(name)
                outcomes[name] = _timed(run)
        timings = {name: ms for name, (_, ms) in outcomes.items()}
        timings["total"] = (time.perf_counter() - started) * 1000
        return Analysis(
            md5=image.md5,
            width=image.width,
            height=image.height,
            classifications=tuple(outcomes["classifier"][0]),
            detections=tuple(outcomes["detector"][0]),
            faces=tuple(outcomes["faces"][0]),
            models=self.models,
            timings_ms={name: round(ms, 2) for name, ms in timings.items()},
        )

    def analyze_many(self, images: list[DecodedImage], batch_size: int = 8) -> list[Analysis]:
        """:meth:`analyze` for several images, batching the classifier and detector per ``batch_size``.

        Results equal one-at-a-time analysis; per-image timings are the batch's time shared out.
        """
        analyses: list[Analysis] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            rgbs = [image.rgb for image in chunk]
            classes, classify_ms = _timed(lambda rgbs=rgbs: self.classifier.classify_batch(rgbs, top_k=self.top_k))
            boxes, detect_ms = _timed(
                lambda rgbs=rgbs: self.detector.detect_batch(
                    rgbs, score_threshold=RAW_DETECTION_SCORE, iou_threshold=RAW_NMS_IOU
                )
            )
            for image, image_classes, image_boxes in zip(chunk, classes, boxes, strict=True):
                faces, faces_ms = _timed(lambda rgb=image.rgb: self.faces.detect_faces(rgb))
                timings = {
                    "classifier": classify_ms / len(chunk),
                    "detector": detect_ms / len(chunk),
                    "faces": faces_ms,
                }
                timings["total"] = sum(timings.values())
                analyses.append(
                    Analysis(
                        md5=image.md5,
                        width=image.width,
                        height=image.height,
                        classifications=tuple(image_classes),
                        detections=tuple(image_boxes),
                        faces=tuple(faces),
                        models=self.models,
                        timings_ms={name: round(ms, 2) for name, ms in timings.items()},
                    )
                )
        return analyses

    def runtime(self) -> RuntimeInfo:
        import keras

        return RuntimeInfo(backend=keras.backend.backend(), device=_device_name(), load_seconds=self.load_seconds)


def _timed(run):
    started = time.perf_counter()
    result = run()
    return result, (time.perf_counter() - started) * 1000


def _device_name() -> str:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else "CPU"
    if keras.backend.backend() == "jax":
        import jax

        return str(jax.devices()[0])
    return "CPU"


def load_analyzer(
    models_dir: Path, top_k: int = 5, parallel: bool = False, face_detector: str = "auto"
) -> Analyzer:
    """Load the three networks, preferring full ResNet50/YOLOv3 weights when ``models_dir`` has them."""
    from picmetric_core.models.classifier import load_classifier
    from picmetric_core.models.faces import load_face_detector
    from picmetric_core.models.yolo import load_detector

    load_seconds: dict[str, float] = {}

    def timed_load(role: str, loader):
        started = time.perf_counter()
        model = loader()
        load_seconds[role] = round(time.perf_counter() - started, 2)
        return model

    return Analyzer(
        classifier=timed_load("classifier", lambda: load_classifier(models_dir)),
        detector=timed_load("detector", lambda: load_detector(models_dir)),
        faces=timed_load("faces", lambda: load_face_detector(face_detector)),
        top_k=top_k,
        parallel=parallel,
        load_seconds=load_seconds,
    )


_analyzers: dict[Path, Analyzer] = {}
_analyzers_lock = threading.Lock()


def get_analyzer(settings: Settings) -> Analyzer:
    """The process-wide analyzer for ``settings.resolved_models_dir`` (loaded on first use)."""
    models_dir = settings.resolved_models_dir
    with _analyzers_lock:
        if models_dir not in _analyzers:
            _analyzers[models_dir] = load_analyzer(
                models_dir, top_k=settings.classifier_top_k, face_detector=settings.face_detector
            )
        return _analyzers[models_dir]
