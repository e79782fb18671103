"""One image through the three networks: ``Analyzer.analyze(image) -> Analysis``.

Models load once per process (:func:`get_analyzer`) and are shared by every thread; each model
serialises its own inference, so three threads can run the three networks at the same time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from picmetric_core.intake.images import DecodedImage
from picmetric_core.models.base import Classifier, Detector, FaceDetector
from picmetric_core.results import RAW_DETECTION_SCORE, RAW_NMS_IOU, Analysis, ModelInfo
from picmetric_core.similar.signature import signature_of

if TYPE_CHECKING:
    # Only annotations: the GPU check imports this module where pydantic is not installed.
    from picmetric_core.config import Settings

T = TypeVar("T")
log = logging.getLogger(__name__)

StageCallback = Callable[[str], None]
"""Told the name of each step ("classifier", "detector", "faces", ...) as it starts and, for the
networks, ``"<name> done"`` as each finishes; always from the calling thread (Streamlit needs that)."""

NETWORK_STAGES = ("classifier", "detector", "faces")
KERAS_POLICIES = ("float32", "mixed_bfloat16")
DEFAULT_BATCH = 8


def concurrent_networks(models: Sequence[ModelInfo]) -> bool:
    """Whether the three networks run on three threads: yes on Keras, no once OpenVINO runs any of them.

    Measured on the 2-core CPU: on TensorFlow three threads ran one photo 13-18 % faster (64 vs 74 ms);
    OpenVINO's networks each use every core, and there one after another was faster
    (docs/performance.md, bench/cpu_runtime_bench.py).
    """
    return not any(info.runtime.startswith("OpenVINO") for info in models)


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
    keras_free: bool = False  # read back from the converted models an earlier start kept; Keras not loaded
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.parallel:
            self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="picmetric-net")

    @property
    def models(self) -> tuple[ModelInfo, ...]:
        return (self.classifier.info, self.detector.info, self.faces.info)

    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis:
        """Run all three networks on ``image``; raw results are kept at low thresholds.

        ``on_stage`` is told each network's name as it starts (all three at once when parallel) and
        ``"<name> done"`` as it finishes.

        Example:
            >>> analysis = get_analyzer(Settings()).analyze(decode_image(open("dog.jpg", "rb").read(), ...))
            >>> sorted({d.label for d in shown(analysis).detections})
            ['bicycle', 'car', 'dog', 'truck']
        """
        rgb = image.rgb
        stages = {
            "classifier": lambda: self.classifier.classify_batch_with_features([rgb], top_k=self.top_k)[0],
            "detector": lambda: self.detector.detect(
                rgb, score_threshold=RAW_DETECTION_SCORE, iou_threshold=RAW_NMS_IOU
            ),
            "faces": lambda: self.faces.detect_faces(rgb),
        }
        report = on_stage or _ignore_stage
        started = time.perf_counter()
        outcomes = self._run_stages(stages, report)
        timings = {name: ms for name, (_, ms) in outcomes.items()}
        timings["total"] = (time.perf_counter() - started) * 1000
        classes, features = outcomes["classifier"][0]
        return image.in_original_pixels(
            Analysis(
                md5=image.md5,
                width=image.width,
                height=image.height,
                classifications=tuple(classes),
                detections=tuple(outcomes["detector"][0]),
                faces=tuple(outcomes["faces"][0]),
                models=self.models,
                timings_ms={name: round(ms, 2) for name, ms in timings.items()},
                signature=signature_of(rgb, features, self.classifier.info.name, phash=image.phash),
            )
        )

    def analyze_many(self, images: Sequence[DecodedImage], batch_size: int = DEFAULT_BATCH) -> list[Analysis]:
        """:meth:`analyze` for several images of any sizes, each network batched ``batch_size`` at a time.

        The classifier sees a batch of centre crops, the detector a batch of letterboxed inputs and
        MTCNN each pyramid level and each stage's candidates across the batch. Results equal
        one-at-a-time analysis; per-image timings are each network's batch time shared out, and
        ``total`` is the batch's wall time shared out (networks may overlap when ``parallel``).

        Example:
            >>> analyses = get_analyzer(Settings()).analyze_many([dog, astronaut], batch_size=8)
            >>> [len(a.faces) for a in analyses]
            [0, 1]
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        chunks = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        started = time.perf_counter()
        if self._pool is None:
            outcomes = [self._run_stages(self._chunk_stages(chunk), _ignore_stage) for chunk in chunks]
        else:
            # Every chunk's three jobs are queued at once: each network takes the next chunk as soon
            # as it is free, so one network's host-side work overlaps another's arithmetic.
            pool = self._pool
            pending = [
                {name: pool.submit(_timed, run) for name, run in self._chunk_stages(chunk).items()} for chunk in chunks
            ]
            outcomes = [{name: future.result() for name, future in futures.items()} for futures in pending]
        wall_ms = (time.perf_counter() - started) * 1000
        analyses: list[Analysis] = []
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            analyses.extend(self._chunk_analyses(chunk, outcome, wall_ms * len(chunk) / len(images)))
        return analyses

    def _chunk_stages(self, chunk: Sequence[DecodedImage]) -> dict[str, Callable[[], list]]:
        rgbs = [image.rgb for image in chunk]
        return {
            "classifier": lambda: self.classifier.classify_batch_with_features(rgbs, top_k=self.top_k),
            "detector": lambda: self.detector.detect_batch(
                rgbs, score_threshold=RAW_DETECTION_SCORE, iou_threshold=RAW_NMS_IOU
            ),
            "faces": lambda: self.faces.detect_faces_batch(rgbs),
        }

    def _chunk_analyses(
        self, chunk: Sequence[DecodedImage], outcome: dict[str, tuple[list, float]], wall_ms: float
    ) -> list[Analysis]:
        share = {name: ms / len(chunk) for name, (_, ms) in outcome.items()} | {"total": wall_ms / len(chunk)}
        timings = {name: round(ms, 2) for name, ms in share.items()}
        return [
            image.in_original_pixels(
                Analysis(
                    md5=image.md5,
                    width=image.width,
                    height=image.height,
                    classifications=tuple(outcome["classifier"][0][i][0]),
                    detections=tuple(outcome["detector"][0][i]),
                    faces=tuple(outcome["faces"][0][i]),
                    models=self.models,
                    timings_ms=timings,
                    signature=signature_of(
                        image.rgb, outcome["classifier"][0][i][1], self.classifier.info.name, phash=image.phash
                    ),
                )
            )
            for i, image in enumerate(chunk)
        ]

    def _run_stages(self, stages: dict[str, Callable[[], T]], report: StageCallback) -> dict[str, tuple[T, float]]:
        """Each stage's result and milliseconds: on the pool at once when parallel, else in order."""
        if self._pool is None:
            outcomes = {}
            for name, run in stages.items():
                report(name)
                outcomes[name] = _timed(run)
                report(f"{name} done")
            return outcomes
        for name in stages:
            report(name)
        futures = {self._pool.submit(_timed, run): name for name, run in stages.items()}
        for future in as_completed(futures):
            future.result()  # a failed network raises here, before the others are reported done
            report(f"{futures[future]} done")
        return {name: future.result() for future, name in futures.items()}

    def runtime(self) -> RuntimeInfo:
        if self.keras_free:
            return RuntimeInfo(backend="OpenVINO (Keras not loaded)", device="CPU", load_seconds=self.load_seconds)
        import keras

        from picmetric_core.models.compiled import device_name

        return RuntimeInfo(backend=keras.backend.backend(), device=device_name(), load_seconds=self.load_seconds)


def _ignore_stage(_stage: str) -> None:
    pass


def _timed(run: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = run()
    return result, (time.perf_counter() - started) * 1000


def load_analyzer(
    models_dir: Path,
    top_k: int = 5,
    parallel: bool | None = None,
    face_detector: str = "auto",
    precision: str = "auto",
    device_nms: str = "auto",
    classifier: str = "lite2",
) -> Analyzer:
    """Load the three networks, preferring full ResNet50/YOLOv3 weights when ``models_dir`` has them.

    ``precision`` says how they run: "auto" = per network, the fastest engine here that passes the
    fidelity gate (:mod:`picmetric_core.models.choice`), and once all three run on OpenVINO a later start
    reads their converted models back without importing Keras (:mod:`picmetric_core.models.kept_networks`);
    "float32" or "mixed_bfloat16" = Keras with that
    dtype policy for the classifier and detector; "openvino_float32" / "openvino_bfloat16" = that engine
    for all three. ``device_nms`` ("auto", "on", "off") whether YOLO selects its detections on the
    device; ``classifier`` ("lite2", "lite0") the shipped stand-in used when ResNet50's weights are absent;
    ``parallel`` whether the networks run on three threads (None: :func:`concurrent_networks` decides).
    """
    from picmetric_core.models import kept_networks

    started = time.perf_counter()
    settings = (precision, face_detector, device_nms, classifier)
    if precision == "auto":
        kept = kept_networks.read(models_dir, kept_networks.start_key(models_dir, settings))
        if kept is not None:
            log.info("read back the converted networks: Keras not loaded")
            load_seconds = {"converted networks": round(time.perf_counter() - started, 2)}
            networks = kept.classifier, kept.detector, kept.faces
            parallel = concurrent_networks([network.info for network in networks]) if parallel is None else parallel
            return Analyzer(*networks, top_k=top_k, parallel=parallel, load_seconds=load_seconds, keras_free=True)

    from picmetric_core.models import choice, engines
    from picmetric_core.models.classifier import load_classifier
    from picmetric_core.models.compiled import building_precision, use_device_nms
    from picmetric_core.models.faces import load_face_detector
    from picmetric_core.models.yolo import load_detector

    load_seconds: dict[str, float] = {}

    def timed_load(role: str, loader):
        started = time.perf_counter()
        model = loader()
        load_seconds[role] = round(time.perf_counter() - started, 2)
        return model

    keras_policy = precision if precision in KERAS_POLICIES else "float32"
    # A Keras policy leaves MTCNN in float32: bfloat16 there moved face scores near the thresholds.
    with building_precision(keras_policy):
        classifier = timed_load("classifier", lambda: load_classifier(models_dir, classifier))
        on_device = use_device_nms(device_nms)
        detector = timed_load("detector", lambda: load_detector(models_dir, device_nms=on_device))
    faces = timed_load("faces", lambda: load_face_detector(face_detector))

    def placed(role: str, network: T) -> T:
        if not hasattr(network, "run_on"):  # the mtcnn package runs its own TensorFlow models
            return network
        if precision == "auto":
            started = time.perf_counter()
            network, chosen = choice.choose(choice.ROLES[role], network, models_dir)
            load_seconds[f"{role} engine"] = round(time.perf_counter() - started, 2)
            log.info("%s runs on %s", role, chosen.describe() if chosen.measured else chosen.engine)
            return network
        engine = engines.ENGINES.get(precision)
        if engine is None:
            raise ValueError(f"unknown precision {precision!r}: use auto, {', '.join(engines.ENGINES)}")
        return network.run_on(engine, models_dir)

    networks = placed("classifier", classifier), placed("detector", detector), placed("faces", faces)
    # Keyed after choosing: the key covers engines.json, which a first start has just written.
    if precision == "auto" and kept_networks.keep(models_dir, kept_networks.start_key(models_dir, settings), *networks):
        log.info("recorded the converted networks: the next start reads them back without Keras")
    if parallel is None:
        parallel = concurrent_networks([network.info for network in networks])
    return Analyzer(*networks, top_k=top_k, parallel=parallel, load_seconds=load_seconds)


AnalyzerKey = tuple[Path, int, str, str, str, str]
_analyzers: dict[AnalyzerKey, Analyzer] = {}
_analyzers_lock = threading.Lock()


def analyzer_key(settings: Settings) -> AnalyzerKey:
    """Every setting that shapes the analyzer: two settings with the same key share one."""
    return (
        settings.resolved_models_dir,
        settings.classifier_top_k,
        settings.face_detector,
        settings.precision,
        settings.device_nms,
        settings.classifier,
    )


def get_analyzer(settings: Settings) -> Analyzer:
    """The process-wide analyzer for these settings (loaded on first use, then shared)."""
    key = analyzer_key(settings)
    with _analyzers_lock:
        if key not in _analyzers:
            _analyzers[key] = load_analyzer(
                settings.resolved_models_dir,
                top_k=settings.classifier_top_k,
                face_detector=settings.face_detector,
                precision=settings.precision,
                device_nms=settings.device_nms,
                classifier=settings.classifier,
            )
        return _analyzers[key]
