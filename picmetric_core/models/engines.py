"""How a Keras network runs on this machine: as Keras built it, or converted to OpenVINO in float32 or bfloat16.

The networks stay defined once, in Keras. An :class:`Engine` turns one into a :data:`Predict` callable;
OpenVINO's converted model is kept under the models folder, keyed on the weights and OpenVINO's version,
so a start after the first reads it instead of converting again (``openvino_artefact``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import keras
import numpy as np

from picmetric_core.models.compiled import accelerator, compiled_predict, traced_inference
from picmetric_core.models.float32_stem import cut_after_stem

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray | list[np.ndarray]], list[np.ndarray]]
"""A network's inference: float32 input array(s) in, its outputs as float32 numpy arrays out."""

ARTEFACTS_FOLDER = "converted"
RECIPE = "bfloat16 with a float32 stem"
"""How the engines are put together; part of a kept choice's key, so a start after a change of recipe measures again."""


@dataclass(frozen=True)
class Engine:
    """One way to run a network: ``runtime`` ("keras" or "openvino") at ``precision`` ("float32", "bfloat16")."""

    runtime: str
    precision: str

    @property
    def name(self) -> str:
        """The setting's spelling, e.g. ``openvino_bfloat16``; Keras float32 is plain ``float32``."""
        return self.precision if self.runtime == "keras" else f"{self.runtime}_{self.precision}"

    def describe(self) -> str:
        """For people, e.g. ``OpenVINO 2026.4.1 bfloat16 · AMX`` or ``TensorFlow float32 · AVX-512``."""
        runtime = f"OpenVINO {openvino_version()}" if self.runtime == "openvino" else keras_runtime()
        return f"{runtime} {self.precision} · {instruction_set()}"


KERAS_FLOAT32 = Engine("keras", "float32")
KERAS_MIXED_BFLOAT16 = Engine("keras", "mixed_bfloat16")
OPENVINO_FLOAT32 = Engine("openvino", "float32")
OPENVINO_BFLOAT16 = Engine("openvino", "bfloat16")
ENGINES = {engine.name: engine for engine in (KERAS_FLOAT32, KERAS_MIXED_BFLOAT16, OPENVINO_FLOAT32, OPENVINO_BFLOAT16)}


def keras_runtime() -> str:
    backend = keras.backend.backend()
    return {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}.get(backend, backend)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def instruction_set(flags: frozenset[str] | None = None) -> str:
    """The widest matrix/vector unit this CPU has, as the figures in docs/performance.md name it.

    >>> instruction_set(frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
    'AMX'
    >>> instruction_set(frozenset({"avx2", "avx512f", "avx512_bf16"}))
    'AVX-512 bf16'
    >>> instruction_set(frozenset({"avx2"}))
    'AVX2'
    """
    flags = cpu_flags() if flags is None else flags
    if accelerator() is not None:
        return str(accelerator())
    if {"amx_bf16", "amx_tile"} <= flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 bf16"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "x86-64"


@lru_cache(maxsize=1)
def openvino_version() -> str | None:
    """OpenVINO's version, or None where it cannot run here (not installed, or not on the TensorFlow backend
    it converts from, or the networks are on an accelerator)."""
    if keras.backend.backend() != "tensorflow" or accelerator() is not None:
        return None
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version().split("-", 1)[0]


@lru_cache(maxsize=1)
def openvino_has_bfloat16() -> bool:
    """Whether OpenVINO's CPU plugin computes bfloat16 natively here (AMX or AVX-512 bf16)."""
    if openvino_version() is None:
        return False
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def runnable(engine: Engine) -> bool:
    """Whether ``engine`` can run on this machine at all."""
    if engine.runtime == "keras":
        return True
    if engine.precision == "bfloat16":
        return openvino_has_bfloat16()
    return openvino_version() is not None


def predictor(model: keras.Model, engine: Engine, artefacts: Path | None = None, weights: str = "") -> Predict:
    """``model``'s inference run by ``engine``.

    Args:
        model: a float32 Keras model (for Keras ``mixed_bfloat16``, built under that policy).
        engine: how to run it.
        artefacts: the folder OpenVINO's converted models are kept in; None converts in memory each time.
        weights: the weights' label (name and checksum), part of the converted model's key.
    """
    if engine.runtime == "keras":
        return compiled_predict(model)
    if not runnable(engine):
        raise ValueError(f"{engine.name} cannot run on this machine")
    return _OpenVinoPredict(openvino_artefact(model, artefacts, weights), engine.precision, artefacts)


def openvino_artefact(model: keras.Model, folder: Path | None, weights: str):
    """``model`` as an OpenVINO model: read from ``folder`` when an earlier start converted it, else converted
    (and written there). The key is the model's name and input shapes, the weights' label and OpenVINO's version."""
    import openvino as ov

    key = hashlib.sha256(
        "|".join([model.name, str([tuple(i.shape) for i in model.inputs]), weights, openvino_version() or ""]).encode()
    ).hexdigest()[:16]
    path = folder / ARTEFACTS_FOLDER / f"{model.name}-{key}.xml" if folder is not None else None
    if path is not None and path.exists() and path.with_suffix(".bin").exists():
        try:
            return _core().read_model(path)
        except RuntimeError:
            log.warning("rebuilding an unreadable converted model %s", path.name)
    converted = ov.convert_model(traced_inference(model).get_concrete_function())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.stem}.{threading.get_ident()}.xml")
        ov.save_model(converted, staging, compress_to_fp16=False)
        staging.with_suffix(".bin").replace(path.with_suffix(".bin"))
        staging.replace(path)
    return converted


class _OpenVinoPredict:
    """A compiled OpenVINO model with one request per calling thread (a request runs one call at a time).

    In bfloat16 the stem (up to the second convolution) is compiled apart in float32 and hands its output
    tensor to the body's request without a copy (:mod:`.float32_stem`).
    """

    def __init__(self, model, precision: str, artefacts: Path | None) -> None:
        cut = cut_after_stem(model) if precision == "bfloat16" else None
        if cut is None:
            self._stem = None
            self._body = _compile(model, "bf16" if precision == "bfloat16" else "f32", artefacts)
        else:
            self._stem = _compile(cut.stem, "f32", artefacts)
            self._body = _compile(cut.body, "bf16", artefacts)
        self._outputs = len(self._body.outputs)
        self._local = threading.local()

    def __call__(self, inputs: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(a, np.float32) for a in (inputs if isinstance(inputs, list) else [inputs])]
        stem, body = self._requests()
        if stem is not None:
            stem.infer(arrays)
            body.set_input_tensor(stem.get_output_tensor(0))
            body.infer()
        else:
            body.infer(arrays)
        return [np.array(body.get_output_tensor(i).data, np.float32) for i in range(self._outputs)]

    def _requests(self):
        requests = getattr(self._local, "requests", None)
        if requests is None:
            stem = self._stem.create_infer_request() if self._stem is not None else None
            requests = self._local.requests = (stem, self._body.create_infer_request())
        return requests


def _compile(model, precision_hint: str, artefacts: Path | None):
    config = {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}
    if artefacts is not None:
        config["CACHE_DIR"] = str(artefacts / ARTEFACTS_FOLDER / "compiled")
    return _core().compile_model(model, "CPU", config)


@lru_cache(maxsize=1)
def _core():
    import openvino as ov

    return ov.Core()
