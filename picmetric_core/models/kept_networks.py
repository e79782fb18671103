"""The three networks as an earlier start left them, read back from their converted models without Keras.

Once ``auto`` has chosen OpenVINO for every network and the converted models are on disk, nothing at run
time needs Keras: the pre- and post-processing is numpy, OpenCV and numba. Importing Keras on TensorFlow
alone costs ~900 MB resident and seconds of start, so a later start reads the converted models named here
and leaves TensorFlow unloaded (``docs/performance.md``, "A start that reads the converted models").

What was kept is recorded in ``converted/kept-networks.json`` under a **start key**: everything that would
change what a Keras start builds and chooses — the settings that shape the analyzer, the weight files it
would read (path, size, modification time), this package's model code, the versions of Keras, TensorFlow
and OpenVINO, the CPU and whether a GPU is visible, and the engine choices kept in ``engines.json``. When
any of them changes (new weights fetched, an upgrade, another machine, ``engines.json`` deleted to measure
again) the key changes and the next start builds in Keras as before, then records the new key.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from picmetric_core.models import weights
from picmetric_core.models.classifier import SHIPPED_CLASSIFIERS, KerasClassifier
from picmetric_core.models.engines import ARTEFACTS_FOLDER, KeptModel, cpu_flags, cpu_model
from picmetric_core.models.mtcnn_keras import KerasMtcnn, weights_dir
from picmetric_core.models.yolo import YoloDetector
from picmetric_core.results import ModelInfo

log = logging.getLogger(__name__)

RECORD = "kept-networks.json"
KEPT_RECORDS = 8  # start keys remembered (each a few hundred bytes); the oldest is forgotten first
MODEL_CODE = Path(__file__).resolve().parent
PACKAGES = ("keras", "tensorflow", "openvino", "numpy")
GPU_MARKERS = (Path("/dev/nvidiactl"), Path("/proc/driver/nvidia"), Path("/dev/kfd"))


@dataclass(frozen=True)
class KeptNetworks:
    classifier: KerasClassifier
    detector: YoloDetector
    faces: KerasMtcnn


def start_key(models_dir: Path, settings: tuple[str, ...]) -> str:
    """What a Keras start from ``models_dir`` with ``settings`` would build and choose, as one digest."""
    parts = [
        repr(settings),
        *_weight_files(models_dir),
        _model_code_digest(),
        *(f"{name} {_version(name)}" for name in PACKAGES),
        os.environ.get("KERAS_BACKEND", ""),
        cpu_model(),
        " ".join(sorted(cpu_flags())),
        str(os.cpu_count()),
        str([marker.exists() for marker in GPU_MARKERS]),
        _file_digest(models_dir / "engines.json"),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def keep(models_dir: Path, key: str, classifier: Any, detector: Any, faces: Any) -> bool:
    """Records the three networks under ``key`` when each runs a converted model kept in ``models_dir``."""
    kept_classifier = getattr(classifier, "kept_model", None)
    kept_detector = getattr(detector, "kept_model", None)
    kept_faces = getattr(faces, "kept_models", None)
    if kept_classifier is None or kept_detector is None or kept_faces is None:
        return False
    entry = {
        "classifier": {
            "info": asdict(classifier.info),
            "model": _described(kept_classifier, models_dir),
            "preprocessing": classifier.preprocessing,
            "resize_to": classifier.resize_to,
        },
        "detector": {"info": asdict(detector.info), "model": _described(kept_detector, models_dir)},
        "faces": {
            "info": asdict(faces.info),
            "models": {net: _described(model, models_dir) for net, model in kept_faces.items()},
        },
    }
    records = _records(models_dir)
    records.pop(key, None)
    records[key] = entry
    while len(records) > KEPT_RECORDS:
        records.pop(next(iter(records)))
    path = models_dir / ARTEFACTS_FOLDER / RECORD
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{RECORD}.{os.getpid()}")
        staging.write_text(json.dumps(records, indent=1))
        staging.replace(path)
    except OSError as error:
        log.warning("could not record the converted networks: %s", error)
        return False
    return True


def read(models_dir: Path, key: str) -> KeptNetworks | None:
    """The networks recorded under ``key``, read back from their converted models; None when there are none,
    a file is missing, or OpenVINO cannot read them (the caller then builds in Keras)."""
    entry = _records(models_dir).get(key)
    if entry is None:
        return None
    try:
        classifier_entry, detector_entry, faces_entry = entry["classifier"], entry["detector"], entry["faces"]
        face_models = {net: _model(spec, models_dir) for net, spec in faces_entry["models"].items()}
        return KeptNetworks(
            classifier=KerasClassifier.kept(
                _model(classifier_entry["model"], models_dir),
                ModelInfo(**classifier_entry["info"]),
                classifier_entry["preprocessing"],
                classifier_entry["resize_to"],
                models_dir,
            ),
            detector=YoloDetector.kept(
                _model(detector_entry["model"], models_dir), ModelInfo(**detector_entry["info"]), models_dir
            ),
            faces=KerasMtcnn.kept(face_models, ModelInfo(**faces_entry["info"]), models_dir),
        )
    except (KeyError, TypeError, ValueError, OSError, RuntimeError) as error:
        log.warning("could not read back the converted networks (%s); building them in Keras", error)
        return None


def _described(model: KeptModel, models_dir: Path) -> dict[str, str]:
    return {"path": str(model.path.relative_to(models_dir)), "precision": model.precision}


def _model(spec: dict[str, str], models_dir: Path) -> KeptModel:
    path = models_dir / spec["path"]
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        raise FileNotFoundError(f"{path.name} is no longer there")
    return KeptModel(path, spec["precision"])


def _records(models_dir: Path) -> dict[str, dict]:
    try:
        records = json.loads((models_dir / ARTEFACTS_FOLDER / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _weight_files(models_dir: Path) -> list[str]:
    """Every weight file a Keras start could read, as it is now (a fetched ResNet50 or YOLOv3 changes it)."""
    specs = [weights.RESNET50, weights.YOLOV3, weights.YOLOV3_TINY]
    specs += [variant.weights for variant in SHIPPED_CLASSIFIERS.values()]
    located = [weights.locate(spec, models_dir) for spec in specs]
    try:
        located += sorted(weights_dir().glob("*"))
    except FileNotFoundError:
        located.append(None)
    return [_stat(path) for path in located]


def _stat(path: Path | None) -> str:
    if path is None:
        return "absent"
    try:
        stat = path.stat()
    except OSError:
        return f"{path} unreadable"
    return f"{path} {stat.st_size} {stat.st_mtime_ns}"


def _model_code_digest() -> str:
    digest = hashlib.sha256()
    for source in sorted(MODEL_CODE.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "absent"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
