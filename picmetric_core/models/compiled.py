"""A compiled forward pass on whichever Keras backend is running."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

Forward = Callable[[np.ndarray], np.ndarray]


def compiled_forward(model: keras.Model, input_size: int) -> Forward:
    """``model``'s inference as one compiled call taking and returning numpy arrays.

    On TensorFlow a ``tf.function`` with a batch-polymorphic signature traces once for every batch
    size (it skips Keras' per-layer eager dispatch, the main cost at batch 1). Elsewhere
    ``predict_on_batch`` is already a jit-compiled step (JAX) or the fastest call there is.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32)
        traced = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return lambda batch: traced(tf.convert_to_tensor(batch, tf.float32)).numpy()
    return lambda batch: np.asarray(model.predict_on_batch(np.asarray(batch, np.float32)))
