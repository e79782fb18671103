"""A compiled forward pass on whichever Keras backend is running, and the precision models are built in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import keras
import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]

PRECISIONS = ("float32", "mixed_bfloat16")
DEVICE_NMS_MODES = ("auto", "on", "off")


def accelerator() -> str | None:
    """The GPU/TPU the Keras backend computes on, by name, or None on the host's CPU.

    The one place that asks the backend which device it uses.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else str(device)
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return gpus[0].name if gpus else None
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return None


def device_name() -> str:
    """What the networks compute on, for people: the accelerator's name, else ``"CPU"``."""
    return accelerator() or "CPU"


def use_device_nms(mode: str = "auto") -> bool:
    """Whether YOLO thresholds and suppresses on the device, after the network, for a
    ``Settings.device_nms`` mode: ``on``, ``off``, or ``auto`` = only on an accelerator (on a CPU the
    host's NMS on the few passing boxes is cheaper than the device's fixed 1,024x1,024 overlap matrix:
    measured +5 ms an image).

    >>> use_device_nms("on"), use_device_nms("off")
    (True, False)
    """
    if mode not in DEVICE_NMS_MODES:
        raise ValueError(f"unknown device NMS mode {mode!r}: use one of {', '.join(DEVICE_NMS_MODES)}")
    return accelerator() is not None if mode == "auto" else mode == "on"


@contextmanager
def building_precision(policy: str = "float32") -> Iterator[str]:
    """Layers built inside use ``policy`` (``Settings.precision``); the global policy is restored after.

    ``mixed_bfloat16`` computes in bfloat16 with float32 weights; it pays on GPUs (tensor cores) and
    changes scores in the third decimal, so float32 stays the default.

    Example:
        >>> with building_precision("mixed_bfloat16"):
        ...     model = keras.applications.ResNet50(weights=None)
        >>> model.layers[2].compute_dtype
        'bfloat16'
    """
    chosen = policy
    if chosen not in PRECISIONS:
        raise ValueError(f"unknown precision {chosen!r}: use one of {', '.join(PRECISIONS)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(chosen)
    try:
        yield chosen
    finally:
        keras.config.set_dtype_policy(previous)


def compiled_forward(model: keras.Model, input_size: int) -> Forward:
    """``model``'s inference as one compiled call taking and returning float32 numpy arrays.

    On TensorFlow a ``tf.function`` with a batch-polymorphic signature traces once for every batch
    size (it skips Keras' per-layer eager dispatch, the main cost at batch 1). On JAX a ``jax.jit`` of
    ``stateless_call`` with the weights passed in, which skips ``predict_on_batch``'s per-call Python
    (data adapters, callbacks); it compiles once per batch size. Elsewhere ``predict_on_batch``.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32)
        traced = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return lambda batch: traced(tf.convert_to_tensor(batch, tf.float32)).numpy().astype(np.float32, copy=False)
    if keras.backend.backend() == "jax":
        return _jax_forward(model)
    return lambda batch: np.asarray(model.predict_on_batch(np.asarray(batch, np.float32)), np.float32)


def _jax_forward(model: keras.Model) -> Forward:
    on_device = device_forward(model)
    return lambda batch: np.asarray(on_device(np.asarray(batch, np.float32)), np.float32)


def compiled_predict(model: keras.Model) -> Callable[[np.ndarray | list[np.ndarray]], list[np.ndarray]]:
    """``model.predict_on_batch`` with its outputs as a list of numpy arrays, for models of any inputs.

    ``predict_on_batch``'s per-call Python costs about a millisecond, paid by MTCNN a dozen times an image,
    so on TensorFlow a ``tf.function`` traced once for the declared input shapes, and on JAX a ``jax.jit``
    of ``stateless_call`` (compiled once per input shape).
    """
    if keras.backend.backend() == "tensorflow":
        traced = traced_inference(model)
        return lambda inputs: [
            np.asarray(o) for o in _as_list(traced(*[np.asarray(x, np.float32) for x in _as_list(inputs)]))
        ]
    if keras.backend.backend() != "jax":
        return lambda inputs: [np.asarray(o) for o in _as_list(model.predict_on_batch(inputs))]
    on_device = device_forward(model)
    return lambda inputs: [np.asarray(o) for o in _as_list(on_device(inputs))]


def traced_inference(model: keras.Model):
    """``model``'s inference as a TensorFlow function traced once for its declared input shapes (batch and,
    for P-Net, height and width free), one positional argument per input. OpenVINO converts it too."""
    import tensorflow as tf

    specs = [tf.TensorSpec(tuple(i.shape), tf.float32, name=f"input_{n}") for n, i in enumerate(model.inputs)]
    return tf.function(lambda *xs: model(xs[0] if len(xs) == 1 else list(xs), training=False), input_signature=specs)


def device_forward(model: keras.Model) -> Callable[[np.ndarray | list[np.ndarray]], object]:
    """``model``'s inference as one compiled call whose outputs stay on the device (backend tensors).

    For chaining device-side work (:func:`device_function`) without copying the output to the host.
    Inputs go in as given (one float32 array, or a list for a model of several inputs).
    """
    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def run(trainable, non_trainable, inputs):
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=False)
            return outputs

        return lambda inputs: run(trainable, non_trainable, inputs)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda inputs: model(inputs, training=False))
    return lambda inputs: model(inputs, training=False)


def device_function(function: Callable, static: tuple[str, ...] = ()) -> Callable:
    """``function`` over backend tensors, compiled (``jax.jit`` / ``tf.function``); its outputs stay on
    the device. Keyword arguments named in ``static`` are Python values it is specialised on."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function, static_argnames=static)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function)  # a new Python value of a static argument traces again
    return function


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]
