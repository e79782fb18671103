"""How a Keras network runs on this machine: as Keras built it, or converted to OpenVINO in float32 or bfloat16.

The networks stay defined once, in Keras. An :class:`Engine` turns one into a :data:`Predict` callable;
OpenVINO's converted model is kept under the models folder, keyed on the weights and OpenVINO's version,
so a start after the first reads it instead of converting again (``openvino_artefact``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from picmetric_core.models.split_first_convolution import split_first_convolution

if TYPE_CHECKING:
    import keras

# Keras (and with it TensorFlow, ~900 MB resident) is imported only where a Keras model is built or run:
# networks read back from their converted models (:mod:`.kept_networks`) run without it.

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray | list[np.ndarray]], list[np.ndarray]]
"""A network's inference: float32 input array(s) in, its outputs as float32 numpy arrays out."""

ARTEFACTS_FOLDER = "converted"
RECIPE = "bfloat16 with a two-part first convolution; static shapes"
# Models compiled for one input shape, kept per network (the least recently used dropped): for a network
# whose only free size is the batch, one photo at a time only (a copy compiled for a batch's size holds that
# batch's activations: 124 MB more at the peak of bench/batch_bench.py); for one free in height and width
# too (P-Net: three canvases a photo size), a dozen small copies.
STATIC_BATCH = 1
STATIC_SHAPES = 12
SEEN_SHAPES = 256  # shapes remembered as seen once (forgotten all together beyond that)
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
    import keras

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
    from picmetric_core.models.compiled import accelerator

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
    import keras

    from picmetric_core.models.compiled import accelerator

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
        from picmetric_core.models.compiled import compiled_predict

        return compiled_predict(model)
    if not runnable(engine):
        raise ValueError(f"{engine.name} cannot run on this machine")
    converted = openvino_artefact(model, artefacts, weights)
    return _OpenVinoPredict(converted, engine.precision, artefacts, artefact_path(model, artefacts, weights))


def kept_predictor(kept: KeptModel, artefacts: Path) -> Predict:
    """A converted model an earlier start kept, run by OpenVINO (neither Keras nor TensorFlow is imported)."""
    return _OpenVinoPredict(_core().read_model(kept.path), kept.precision, artefacts, kept.path)


def kept_model(predict: Predict) -> KeptModel | None:
    """Where ``predict``'s converted model is kept and the precision it runs in; None for Keras (or unkept)."""
    if isinstance(predict, _OpenVinoPredict) and predict.source is not None:
        return KeptModel(predict.source, predict.precision)
    return None


@dataclass(frozen=True)
class KeptModel:
    """A converted model on disk (``converted/<name>-<key>.xml``) and the precision it is compiled in."""

    path: Path
    precision: str


def artefact_path(model: keras.Model, folder: Path | None, weights: str) -> Path | None:
    """Where ``model``'s converted model is kept: keyed on its name and input shapes, the weights' label and
    OpenVINO's version (None: no folder, converted in memory each time)."""
    if folder is None:
        return None
    key = hashlib.sha256(
        "|".join([model.name, str([tuple(i.shape) for i in model.inputs]), weights, openvino_version() or ""]).encode()
    ).hexdigest()[:16]
    return folder / ARTEFACTS_FOLDER / f"{model.name}-{key}.xml"


def openvino_artefact(model: keras.Model, folder: Path | None, weights: str):
    """``model`` as an OpenVINO model: read from ``folder`` when an earlier start converted it, else converted
    (and written there, at :func:`artefact_path`)."""
    import openvino as ov

    from picmetric_core.models.compiled import traced_inference

    path = artefact_path(model, folder, weights)
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
    """A converted model run by OpenVINO, compiled for free shapes and, once an input shape comes back, for
    that shape alone (:data:`STATIC_SHAPES` kept): the CPU plugin prepares its kernels again whenever a free
    shape changes between calls, which cost P-Net's pyramid a third of its time. A photo size seen once
    (a batch of mixed photos) stays on the free-shape model; a camera's frames or one camera's photos get
    static models, compiled in the background from their second call (a few hundred milliseconds that no
    call waits for). Where more shapes come back than it keeps (photos of many sizes), it stops compiling
    once it has dropped as many as it keeps, rather than compile the same shapes again and again."""

    def __init__(self, model, precision: str, artefacts: Path | None, source: Path | None = None) -> None:
        self._model = model
        self.precision = precision
        self.source = source
        self._free = _Compiled(model, precision, artefacts)
        self._free_spatial = _free_beyond_batch(model)
        self._keep = STATIC_SHAPES if self._free_spatial else 1
        self._static: OrderedDict[tuple[tuple[int, ...], ...], _Compiled] = OrderedDict()
        self._seen: set[tuple[tuple[int, ...], ...]] = set()
        self._compiling: set[tuple[tuple[int, ...], ...]] = set()
        self._evicted = 0  # once as many as it keeps: more sizes come back than it can keep, so it stops
        self._lock = threading.Lock()

    def __call__(self, inputs: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(a, np.float32) for a in (inputs if isinstance(inputs, list) else [inputs])]
        return self._compiled_for(tuple(a.shape for a in arrays)).infer(arrays)

    def _compiled_for(self, shapes: tuple[tuple[int, ...], ...]) -> _Compiled:
        if not self._free.has_free_shape or not (self._free_spatial or shapes[0][0] == STATIC_BATCH):
            return self._free
        with self._lock:
            compiled = self._static.get(shapes)
            if compiled is not None:
                self._static.move_to_end(shapes)
                return compiled
            if shapes in self._seen and shapes not in self._compiling and self._evicted < self._keep:
                self._compiling.add(shapes)
                _background().submit(self._compile_static, shapes)
            elif len(self._seen) >= SEEN_SHAPES:
                self._seen.clear()
            self._seen.add(shapes)
            return self._free

    def _compile_static(self, shapes: tuple[tuple[int, ...], ...]) -> None:
        try:
            static = self._model.clone()
            static.reshape({index: list(shape) for index, shape in enumerate(shapes)})
            compiled = _Compiled(static, self.precision, None)
        except RuntimeError:
            log.warning("could not compile %s for shapes %s; it keeps running for free shapes", self._model, shapes)
            return
        finally:
            with self._lock:
                self._compiling.discard(shapes)
        with self._lock:
            self._static[shapes] = compiled
            while len(self._static) > self._keep:
                self._static.popitem(last=False)
                self._evicted += 1


def settled() -> None:
    """Returns once the models compiled for a shape so far are ready (timings taken after it see no compile)."""
    _background().submit(lambda: None).result()


def _free_beyond_batch(model) -> bool:
    return any(any(dim.is_dynamic for dim in list(port.get_partial_shape())[1:]) for port in model.inputs)


@lru_cache(maxsize=1)
def _background() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="openvino-compile")


class _Compiled:
    """One compiled model with one request per calling thread (a request runs one call at a time).

    In bfloat16 the first convolution runs as two whose weights add up to the float32 ones
    (:mod:`.split_first_convolution`): whole-network bfloat16 otherwise fails the fidelity gate.
    """

    def __init__(self, model, precision: str, artefacts: Path | None) -> None:
        if precision == "bfloat16":
            model = split_first_convolution(model) or model
        self._model = _compile(model, "bf16" if precision == "bfloat16" else "f32", artefacts)
        self._outputs = len(self._model.outputs)
        self.has_free_shape = any(port.get_partial_shape().is_dynamic for port in model.inputs)
        self._local = threading.local()

    def infer(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._model.create_infer_request()
        request.infer(arrays, share_inputs=True)  # the arrays are ours and contiguous float32: no copy
        return [np.array(request.get_output_tensor(i).data, np.float32) for i in range(self._outputs)]


def _compile(model, precision_hint: str, artefacts: Path | None):
    config = {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}
    if artefacts is not None:
        config["CACHE_DIR"] = str(artefacts / ARTEFACTS_FOLDER / "compiled")
    return _core().compile_model(model, "CPU", config)


@lru_cache(maxsize=1)
def _core():
    import openvino as ov

    return ov.Core()
