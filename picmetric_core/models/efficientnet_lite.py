"""EfficientNet-Lite0 (ImageNet-1k) in Keras 3, built from the PyTorch state dict shipped on PyPI.

Layer names follow the state dict (``_blocks.3._depthwise_conv`` becomes ``blocks_3_depthwise_conv``)
so that loading is a name lookup. Lite variants drop squeeze-and-excitation and use ReLU6.

Padding is TensorFlow's "same" (stride-2 convs pad one pixel more on the bottom/right), as in the
``Conv2dStaticSamePadding`` these weights were trained with. Symmetric ``k // 2`` padding gives the
same shapes but shifts every stride-2 feature map by a pixel: on ``skimage.data.chelsea()`` it scores
tiger cat 0.35, Egyptian cat 0.31, tabby 0.25, against the reference 0.39, 0.35, 0.17 that "same"
reproduces.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from picmetric_core.errors import WeightsError
from picmetric_core.models.pth import load_state_dict

INPUT_SIZE = 224
BN_EPSILON = 1e-3
HEAD_FILTERS = 1280
NUM_CLASSES = 1000

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, bn: str, act: bool = True
) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def _mbconv(
    x: keras.KerasTensor, kernel: int, stride: int, expand: int, c_in: int, c_out: int, index: int
) -> keras.KerasTensor:
    prefix = f"blocks_{index}"
    shortcut = x
    if expand != 1:
        x = _conv_bn(x, c_in * expand, 1, 1, f"{prefix}_expand_conv", f"{prefix}_bn0")
    x = keras.layers.DepthwiseConv2D(kernel, stride, "same", use_bias=False, name=f"{prefix}_depthwise_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_relu6")(x)
    x = _conv_bn(x, c_out, 1, 1, f"{prefix}_project_conv", f"{prefix}_bn2", act=False)
    if stride == 1 and c_in == c_out:
        x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return x


def build_efficientnet_lite0() -> keras.Model:
    """EfficientNet-Lite0 with random weights: NHWC float input in [-1, 1], softmax over 1000 classes."""
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = _conv_bn(inputs, 32, 3, 2, "conv_stem", "bn0")
    index = 0
    for repeats, kernel, stride, expand, c_in, c_out in STAGES:
        for repeat in range(repeats):
            first = repeat == 0
            x = _mbconv(x, kernel, stride if first else 1, expand, c_in if first else c_out, c_out, index)
            index += 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "conv_head", "bn1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def _keras_weights(layer: keras.layers.Layer, state: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [state[f"{key}.weight"].transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
    if isinstance(layer, keras.layers.Conv2D):
        return [state[f"{key}.weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.BatchNormalization):
        return [state[f"{key}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [state[f"{key}.weight"].T, state[f"{key}.bias"]]
    return []


def _torch_key(layer_name: str) -> str:
    """``blocks_3_depthwise_conv`` -> ``_blocks.3._depthwise_conv``; ``bn0`` -> ``_bn0``."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def load_efficientnet_lite0(path: Path) -> keras.Model:
    """Build EfficientNet-Lite0 and fill it from a PyTorch state dict, checking every tensor is used.

    Args:
        path: the ``efficientnet-lite0-57934424.pth`` file (see ``weights.EFFICIENTNET_LITE0``).

    Raises:
        WeightsError: the file is unreadable, or its tensors do not match the architecture.
    """
    state = load_state_dict(path)
    model = build_efficientnet_lite0()
    used: set[str] = set()
    for layer in model.layers:
        key = _torch_key(layer.name)
        try:
            values = _keras_weights(layer, state, key)
        except KeyError as exc:
            raise WeightsError(f"{path.name} has no tensor {exc} for layer {layer.name}") from exc
        if not values:
            continue
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise WeightsError(f"{path.name}: {key} has shapes {[v.shape for v in values]}, expected {expected}")
        layer.set_weights(values)
        used.update(name for name in state if name.startswith(f"{key}."))
    unused = {name for name in state if not name.endswith("num_batches_tracked")} - used
    if unused:
        raise WeightsError(f"{path.name} has tensors the architecture does not use: {sorted(unused)[:5]}")
    return model


def preprocess(batch: np.ndarray) -> np.ndarray:
    """Scale uint8 RGB to the network's input range: (x - 127) / 128."""
    return (batch.astype(np.float32) - 127.0) / 128.0
