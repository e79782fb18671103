"""``PICMETRIC_PRECISION=auto``: per network, the fastest engine this machine runs that passes the fidelity gate.

Each candidate engine runs the network on the calibration photos against Keras float32: scikit-image's,
and darknet's sample photos where Debian's ``darknet`` package put them (the photos the fidelity test
uses, so a machine with them never picks what fails that test). Those that pass :mod:`.fidelity` are
timed and the fastest wins. Keras float32 is always a candidate, so a machine where nothing else passes
keeps it. The decision is kept in the models folder (``engines.json``), keyed on the network, its weights,
the CPU, the runtimes' versions and the photos: a start after the first reads it instead of measuring again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import keras
import numpy as np

from picmetric_core.models import engines, fidelity
from picmetric_core.models.engines import Engine
from picmetric_core.results import RAW_DETECTION_SCORE, RAW_NMS_IOU

log = logging.getLogger(__name__)

CHOICES_FILE = "engines.json"
TIMED_ROUNDS = 3
CALIBRATION_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
DARKNET_PHOTOS = Path("/usr/share/darknet/data")
_choices_lock = threading.Lock()

Network = TypeVar("Network")


@dataclass(frozen=True)
class Trial:
    """One candidate on the calibration photos: its median milliseconds a photo and what the gate said."""

    engine: str
    median_ms: float
    passed: bool
    fidelity: str


@dataclass(frozen=True)
class Choice:
    role: str
    engine: str
    trials: tuple[Trial, ...]
    measured: bool  # False when read from an earlier start's engines.json

    def describe(self) -> str:
        tried = ", ".join(
            f"{t.engine} {t.median_ms:.1f} ms{'' if t.passed else ' (failed the gate)'}" for t in self.trials
        )
        return f"{self.role}: {self.engine} ({tried})"


@dataclass(frozen=True)
class Role(Generic[Network]):
    """How to run one kind of network on a photo and compare two runs' results."""

    name: str
    run: Callable[[Network, np.ndarray], Any]
    compare: Callable[[Any, Any, str], fidelity.Fidelity]


CLASSIFIER = Role("classifier", lambda net, rgb: net.classify(rgb, top_k=5), fidelity.compare_classes)
DETECTOR = Role(
    "detector",
    lambda net, rgb: net.detect(rgb, score_threshold=RAW_DETECTION_SCORE, iou_threshold=RAW_NMS_IOU),
    fidelity.compare_detections,
)
FACES = Role("faces", lambda net, rgb: net.detect_faces(rgb), fidelity.compare_faces)
ROLES = {role.name: role for role in (CLASSIFIER, DETECTOR, FACES)}


def candidates() -> list[Engine]:
    """The engines worth trying here, fastest expected first; Keras float32 (the reference) last."""
    faster = [engines.OPENVINO_BFLOAT16, engines.OPENVINO_FLOAT32]
    return [engine for engine in faster if engines.runnable(engine)] + [engines.KERAS_FLOAT32]


@lru_cache(maxsize=1)
def calibration_photos() -> tuple[tuple[str, np.ndarray], ...]:
    import skimage.data
    from PIL import Image

    photos = [(name, np.ascontiguousarray(getattr(skimage.data, name)())) for name in CALIBRATION_PHOTOS]
    for path in sorted(DARKNET_PHOTOS.glob("*.jpg")):
        with Image.open(path) as image:
            photos.append((path.stem, np.asarray(image.convert("RGB"))))
    return tuple(photos)


def gate(role: Role, reference: Any, candidate: Any, photos: Sequence[tuple[str, np.ndarray]]) -> fidelity.Fidelity:
    """The fidelity of ``candidate`` against ``reference`` over ``photos``."""
    verdict = fidelity.Fidelity()
    for name, rgb in photos:
        verdict = verdict.merged(role.compare(role.run(reference, rgb), role.run(candidate, rgb), f"{name}: "))
    return verdict


def choose(role: Role, network: Any, folder: Path | None) -> tuple[Any, Choice]:
    """``network`` (a Keras wrapper with ``run_on``) on the fastest engine that passes the gate here."""
    options = candidates()
    if len(options) == 1:
        return network.run_on(options[0], folder), Choice(role.name, options[0].name, (), measured=False)
    key = _choice_key(role.name, network)
    kept = _read_choices(folder).get(key)
    if kept is not None and kept.get("engine") in {engine.name for engine in options}:
        engine = engines.ENGINES[kept["engine"]]
        trials = tuple(Trial(**t) for t in kept.get("trials", ()))
        return network.run_on(engine, folder), Choice(role.name, engine.name, trials, measured=False)
    started = time.perf_counter()
    photos = calibration_photos()
    reference = network.run_on(engines.KERAS_FLOAT32, folder)
    runs, verdicts = {}, {}
    for engine in options:
        candidate = reference if engine == engines.KERAS_FLOAT32 else network.run_on(engine, folder)
        verdict = gate(role, reference, candidate, photos) if candidate is not reference else fidelity.Fidelity()
        runs[engine.name], verdicts[engine.name] = candidate, verdict
        if not verdict.passed:
            log.info("%s on %s failed the fidelity gate: %s", role.name, engine.name, "; ".join(verdict.failures))
    medians = _interleaved_median_ms(role, runs, photos)
    trials = [Trial(name, medians[name], verdict.passed, verdict.summary()) for name, verdict in verdicts.items()]
    best = min((t for t in trials if t.passed), key=lambda t: t.median_ms)
    choice = Choice(role.name, best.engine, tuple(trials), measured=True)
    log.info("chose %s in %.1f s", choice.describe(), time.perf_counter() - started)
    _write_choice(folder, key, choice)
    return runs[best.engine], choice


def _interleaved_median_ms(
    role: Role, networks: dict[str, Any], photos: Sequence[tuple[str, np.ndarray]]
) -> dict[str, float]:
    """Each network's median milliseconds a photo, timed in turns photo by photo, the order turning each round.

    Timed one after another, a candidate that happened to run while a neighbour was busy lost to one
    timed in a quiet moment (an AMD machine under load once kept TensorFlow for a detector OpenVINO runs
    twice as fast); in turns, a busy moment slows every candidate alike.
    """
    names = list(networks)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(TIMED_ROUNDS):
        engines.settled()  # models compiled for shapes seen again (OpenVINO) are ready before a round is timed
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for _, rgb in photos:
            for name in order:
                started = time.perf_counter()
                role.run(networks[name], rgb)
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(taken), 2) for name, taken in times.items()}


def _choice_key(role: str, network: Any) -> str:
    info = network.info
    parts = [
        role,
        info.name,
        info.weights,
        str(info.input_size),
        engines.cpu_model(),
        engines.instruction_set(),
        str(os.cpu_count()),
        keras.__version__,
        engines.keras_runtime(),
        engines.openvino_version() or "",
        engines.RECIPE,
        ",".join(name for name, _ in calibration_photos()),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _read_choices(folder: Path | None) -> dict[str, dict]:
    if folder is None:
        return {}
    try:
        return json.loads((folder / CHOICES_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_choice(folder: Path | None, key: str, choice: Choice) -> None:
    if folder is None:
        return
    with _choices_lock:
        choices = _read_choices(folder)
        choices[key] = {"role": choice.role, "engine": choice.engine, "trials": [asdict(t) for t in choice.trials]}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            staging = folder / f".{CHOICES_FILE}.{os.getpid()}"
            staging.write_text(json.dumps(choices, indent=1))
            staging.replace(folder / CHOICES_FILE)
        except OSError as error:
            log.warning("could not keep the engine choice: %s", error)
