"""Darknet ``.cfg`` + ``.weights`` to a Keras 3 functional model (channels-last).

Covers the YOLOv3 family: ``[convolutional]`` (with or without batch norm), ``[shortcut]``,
``[route]``, ``[upsample]``, ``[maxpool]`` and ``[yolo]``. The model's outputs are the raw
convolution outputs that feed each ``[yolo]`` layer; decoding them is the detector's job
(:mod:`picmetric_core.models.yolo`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from picmetric_core.errors import WeightsError

# Darknet normalises with (x - mean) / (sqrt(var) + eps), eps outside the root (blas.c).
DARKNET_BN_EPS = 1e-6
_ACTIVATIONS = {"linear": None, "relu": "relu", "logistic": "sigmoid", "mish": "mish", "swish": "silu"}


@dataclass(frozen=True)
class Section:
    """One ``[kind]`` block of a cfg file with its ``key=value`` options, as strings."""

    kind: str
    options: dict[str, str]

    def int(self, key: str, default: int) -> int:
        return int(self.options.get(key, default))

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.options[key].split(",") if v.strip()]

    def floats(self, key: str) -> list[float]:
        return [float(v) for v in self.options[key].split(",") if v.strip()]


@dataclass(frozen=True)
class ConvSpec:
    """One convolution as darknet stores it, and the Keras layer that receives its weights."""

    layer: keras.layers.Conv2D
    batch_normalize: bool
    filters: int
    in_channels: int
    size: int

    @property
    def float_count(self) -> int:
        per_filter = 4 if self.batch_normalize else 1  # [beta, gamma, mean, var] or [bias]
        return self.filters * (per_filter + self.in_channels * self.size * self.size)


@dataclass(frozen=True)
class YoloHead:
    """One ``[yolo]`` layer: its masked anchors in input pixels (w, h) and its class count."""

    anchors: tuple[tuple[float, float], ...]
    classes: int


@dataclass(frozen=True)
class DarknetNet:
    """A built network: ``model`` maps (N, S, S, 3) floats in [0, 1] to one raw tensor per head."""

    model: keras.Model
    heads: tuple[YoloHead, ...]
    convs: tuple[ConvSpec, ...]
    input_size: int

    @property
    def float_count(self) -> int:
        """How many float32 values a matching ``.weights`` file holds after its header."""
        return sum(conv.float_count for conv in self.convs)


def parse_cfg(path: Path) -> list[Section]:
    """Read a darknet cfg into its sections, in file order (``[net]`` first).

    Args:
        path: the ``.cfg`` file.

    Returns:
        One :class:`Section` per ``[block]``; comments and blank lines dropped.

    Example:
        >>> [s.kind for s in parse_cfg(YOLOV3_TINY_CFG)][:3]
        ['net', 'convolutional', 'maxpool']
    """
    sections: list[Section] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append(Section(line.strip("[]").strip(), {}))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise ValueError(f"{path.name}: cannot parse line {raw!r}")
    if not sections or sections[0].kind not in ("net", "network"):
        raise ValueError(f"{path.name}: a darknet cfg starts with [net]")
    return sections


def _activation(x: keras.KerasTensor, name: str, index: int) -> keras.KerasTensor:
    if name == "leaky":
        return keras.layers.LeakyReLU(negative_slope=0.1, name=f"leaky_{index}")(x)
    if name not in _ACTIVATIONS:
        raise ValueError(f"layer {index}: unsupported activation {name!r}")
    keras_name = _ACTIVATIONS[name]
    return x if keras_name is None else keras.layers.Activation(keras_name, name=f"act_{index}")(x)


def _convolutional(section: Section, x: keras.KerasTensor, index: int) -> tuple[keras.KerasTensor, ConvSpec]:
    size, stride = section.int("size", 1), section.int("stride", 1)
    filters = section.int("filters", 1)
    pad = size // 2 if section.int("pad", 0) else section.int("padding", 0)
    if stride == 1 and size % 2 == 1 and pad == size // 2:
        padding = "same"
    else:
        # Darknet pads symmetrically and floors the output size; for stride-2 3x3 convs the
        # bottom/right pad is never read, i.e. top-left padding, unlike Keras "same".
        if pad:
            x = keras.layers.ZeroPadding2D(pad, name=f"pad_{index}")(x)
        padding = "valid"
    conv = keras.layers.Conv2D(filters, size, strides=stride, padding=padding, name=f"conv_{index}")
    in_channels = int(x.shape[-1])
    x = _activation(conv(x), section.options.get("activation", "logistic"), index)
    return x, ConvSpec(conv, bool(section.int("batch_normalize", 0)), filters, in_channels, size)


def _maxpool(section: Section, x: keras.KerasTensor, index: int) -> keras.KerasTensor:
    size = section.int("size", section.int("stride", 1))
    stride = section.int("stride", 1)
    if section.int("padding", size - 1) != size - 1:
        raise ValueError(f"layer {index}: only darknet's default maxpool padding is supported")
    # Darknet's default padding (size - 1, all of it bottom/right, padded cells ignored) is
    # Keras "same" pooling: yolov3-tiny's size=2 stride=1 pool keeps 13x13.
    return keras.layers.MaxPooling2D(size, strides=stride, padding="same", name=f"pool_{index}")(x)


def _layer_index(value: int, current: int) -> int:
    return current + value if value < 0 else value


def _route(section: Section, outputs: list[keras.KerasTensor], index: int) -> keras.KerasTensor:
    sources = [outputs[_layer_index(v, index)] for v in section.ints("layers")]
    if section.int("groups", 1) != 1:
        raise ValueError(f"layer {index}: grouped routes are not supported")
    if len(sources) == 1:
        return sources[0]
    return keras.layers.Concatenate(axis=-1, name=f"route_{index}")(sources)


def _shortcut(section: Section, outputs: list[keras.KerasTensor], index: int) -> keras.KerasTensor:
    source = outputs[_layer_index(section.int("from", -1), index)]
    x = keras.layers.Add(name=f"shortcut_{index}")([outputs[index - 1], source])
    return _activation(x, section.options.get("activation", "linear"), index)


def _yolo_head(section: Section) -> YoloHead:
    values = section.floats("anchors")
    pairs = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
    mask = section.ints("mask") if "mask" in section.options else list(range(len(pairs)))
    return YoloHead(tuple(pairs[m] for m in mask), section.int("classes", 80))


def build_darknet(cfg_path: Path, input_size: int = 416) -> DarknetNet:
    """Build the Keras model of a darknet cfg, with Keras' initial (random) weights.

    Args:
        cfg_path: the ``.cfg`` file; its ``[net]`` width/height are ignored.
        input_size: side of the square input, a multiple of 32.

    Returns:
        The :class:`DarknetNet`; load real weights with :func:`load_weights`.
    """
    if input_size % 32:
        raise ValueError(f"input size {input_size} is not a multiple of 32")
    sections = parse_cfg(cfg_path)
    channels = sections[0].int("channels", 3)
    inputs = keras.Input((input_size, input_size, channels), name="image")
    outputs: list[keras.KerasTensor] = []
    convs: list[ConvSpec] = []
    heads: list[YoloHead] = []
    raw_heads: list[keras.KerasTensor] = []
    x = inputs
    for index, section in enumerate(sections[1:]):
        if section.kind == "convolutional":
            x, spec = _convolutional(section, x, index)
            convs.append(spec)
        elif section.kind == "maxpool":
            x = _maxpool(section, x, index)
        elif section.kind == "upsample":
            x = keras.layers.UpSampling2D(section.int("stride", 2), name=f"upsample_{index}")(x)
        elif section.kind == "route":
            x = _route(section, outputs, index)
        elif section.kind == "shortcut":
            x = _shortcut(section, outputs, index)
        elif section.kind == "yolo":
            heads.append(_yolo_head(section))
            raw_heads.append(x)
        else:
            raise ValueError(f"{cfg_path.name}: layer {index}: unsupported section [{section.kind}]")
        outputs.append(x)
    if not heads:
        raise ValueError(f"{cfg_path.name}: no [yolo] layer")
    model = keras.Model(inputs, raw_heads, name=cfg_path.stem.replace("-", "_"))
    return DarknetNet(model, tuple(heads), tuple(convs), input_size)


def count_weights(cfg_path: Path) -> int:
    """Float32 values a ``.weights`` file for this cfg holds after its header, from the cfg alone.

    Args:
        cfg_path: the ``.cfg`` file.

    Returns:
        The count; it does not depend on the input size.

    Example:
        >>> count_weights(YOLOV3_CFG) * 4 + 20  # bytes of the published yolov3.weights
        248007048
    """
    sections = parse_cfg(cfg_path)
    channels: list[int] = []
    previous, total = sections[0].int("channels", 3), 0
    for index, section in enumerate(sections[1:]):
        if section.kind == "convolutional":
            filters, size = section.int("filters", 1), section.int("size", 1)
            per_filter = 4 if section.int("batch_normalize", 0) else 1
            total += filters * (per_filter + previous * size * size)
            previous = filters
        elif section.kind == "route":
            previous = sum(channels[_layer_index(v, index)] for v in section.ints("layers"))
        channels.append(previous)
    return total


def _header_length(head: bytes) -> int:
    """Byte length of a .weights header: 3 x int32 version, then int64 'seen' from version 0.2."""
    major, minor, _revision = np.frombuffer(head[:12], dtype="<i4")
    seen_is_int64 = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    return 12 + (8 if seen_is_int64 else 4)


def _read_floats(weights_path: Path, expected: int, model_name: str) -> np.ndarray:
    """The float32 body of a .weights file, refused unless it holds exactly ``expected`` values."""
    try:
        with weights_path.open("rb") as handle:
            head = handle.read(20)
            if len(head) < 16:
                raise WeightsError(f"{weights_path.name}: {len(head)} bytes is too short for darknet weights")
            header = _header_length(head)
            body_bytes = weights_path.stat().st_size - header
            if body_bytes != expected * 4:
                raise WeightsError(
                    f"{weights_path.name}: {body_bytes:,} bytes of weights after its header, but "
                    f"{model_name} needs exactly {expected:,} floats ({expected * 4:,} bytes); "
                    "the file is truncated, padded, or was trained with another cfg"
                )
            handle.seek(header)
            return np.fromfile(handle, dtype="<f4", count=expected)
    except OSError as exc:
        raise WeightsError(f"cannot read {weights_path}: {exc}") from exc


def _load_conv(spec: ConvSpec, floats: np.ndarray, offset: int) -> int:
    n, k = spec.filters, spec.size

    def take(count: int) -> np.ndarray:
        nonlocal offset
        chunk = floats[offset : offset + count]
        offset += count
        return chunk

    bias = take(n)
    if spec.batch_normalize:
        gamma, mean, var = take(n), take(n), take(n)
    kernel = take(n * spec.in_channels * k * k).reshape(n, spec.in_channels, k, k).transpose(2, 3, 1, 0)
    if spec.batch_normalize:
        scale = gamma / (np.sqrt(var) + DARKNET_BN_EPS)
        kernel = kernel * scale
        bias = bias - mean * scale
    spec.layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return offset


def load_weights(net: DarknetNet, weights_path: Path) -> None:
    """Load a darknet ``.weights`` file into ``net``, folding batch norm into each conv.

    Args:
        net: built by :func:`build_darknet` from the cfg the weights were trained with.
        weights_path: the ``.weights`` file.

    Raises:
        WeightsError: the file is unreadable, or holds more or fewer floats than the cfg needs.
    """
    floats = _read_floats(weights_path, net.float_count, net.model.name)
    offset = 0
    for spec in net.convs:
        offset = _load_conv(spec, floats, offset)
    if offset != floats.size:  # float_count and _load_conv disagree: a bug here, not in the file
        raise WeightsError(f"{weights_path.name}: consumed {offset:,} of {floats.size:,} floats")


def load_darknet(cfg_path: Path, weights_path: Path, input_size: int = 416) -> DarknetNet:
    """Build a darknet network and load its weights.

    Example:
        >>> net = load_darknet(YOLOV3_TINY_CFG, tiny_weights)
        >>> [tuple(o.shape) for o in net.model.outputs]
        [(None, 13, 13, 255), (None, 26, 26, 255)]
    """
    net = build_darknet(cfg_path, input_size)
    load_weights(net, weights_path)
    return net
