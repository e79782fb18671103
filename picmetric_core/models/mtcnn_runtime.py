"""MTCNN's three networks as they run: photo pixels in, one output array out.

The package's networks take pixels normalised to ``(v - 127.5) / 128`` and end in two or three heads, one a
softmax over face / not face. The runtime copies compute the same thing with less work around the
convolutions, which cost more than the convolutions themselves on P-Net's large maps (OpenVINO's profile
of the largest pyramid level under bfloat16: softmax 4.0 ms, the three convolutions 5.4 ms):

- the normalisation is folded into the first convolution (``valid`` padding, so exact): the host hands
  over the pixels as they are, and resizes and crops them without normalising the whole photo first;
- the heads are one layer with the box offsets (and landmarks) followed by one face **logit**: a softmax of
  two classes is the sigmoid of their difference, so the threshold is compared with the logit and the
  sigmoid is taken only for the few windows that pass (:func:`face_probability`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

PIXEL_OFFSET = 127.5
PIXEL_SCALE = 128.0
BACKGROUND = PIXEL_OFFSET  # a pixel value the package's networks see as 0 (the crops' fill outside the photo)


def face_logit(probability: float) -> float:
    """The logit whose sigmoid is ``probability`` (a threshold on the face probability, as a logit)."""
    return float(np.log(probability / (1.0 - probability)))


def face_probability(logits: np.ndarray) -> np.ndarray:
    """The package's softmax face probability from the runtime networks' face logits."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def runtime_copy(package_net: keras.Model, build, heads: tuple[str, ...]) -> keras.Model:
    """``build(runtime=True)``'s network carrying ``package_net``'s weights: normalisation folded into
    ``conv1``, and ``heads`` (the package's output layers, the two-class softmax last) merged into one layer
    named ``heads``, whose last unit is the face logit."""
    runtime = build(runtime=True)
    for layer in runtime.layers:
        if not layer.weights or layer.name == "heads":
            continue
        arrays = package_net.get_layer(layer.name).get_weights()
        layer.set_weights(_folded(*arrays) if layer.name == "conv1" else arrays)
    *regressions, classes = (package_net.get_layer(name).get_weights() for name in heads)
    kernels = [kernel for kernel, _ in regressions]
    biases = [bias for _, bias in regressions]
    class_kernel, class_bias = classes
    kernels.append(class_kernel[..., 1:2] - class_kernel[..., 0:1])
    biases.append(class_bias[1:2] - class_bias[0:1])
    runtime.get_layer("heads").set_weights([np.concatenate(kernels, axis=-1), np.concatenate(biases)])
    return runtime


def _folded(kernel: np.ndarray, bias: np.ndarray) -> list[np.ndarray]:
    """A convolution on ``(v - offset) / scale`` as one on ``v`` (exact without padding)."""
    return [kernel / PIXEL_SCALE, bias - PIXEL_OFFSET / PIXEL_SCALE * kernel.sum(axis=(0, 1, 2))]


def merged_heads(x: keras.KerasTensor, units: int, dense: bool) -> keras.KerasTensor:
    from keras import layers

    """The runtime networks' one output layer: ``units`` regression values, then the face logit."""
    if dense:
        return layers.Dense(units + 1, name="heads")(x)
    return layers.Conv2D(units + 1, 1, name="heads")(x)
