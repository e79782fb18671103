"""A converted network's first convolution as two bfloat16 convolutions whose weights add up to the float32 ones.

Under bfloat16 the first convolution's weights keep 8 bits of mantissa, and that alone moved YOLOv3-tiny's
scores by 0.037 and flipped one of EfficientNet-Lite2's top-1 classes (measured by running that one
convolution in float32: both then pass the fidelity gate). Here its weights ``w`` become ``hi = bf16(w)`` and
``lo = w - hi`` (itself rounded to bf16 by the plugin), two convolutions on the same input whose sum carries
~16 bits of each weight; bfloat16 products are exact in the float32 accumulators. The whole network stays one
bfloat16 model, so the matrix units run the stem too and no float32 tensor crosses between two models
(docs/performance.md, "bfloat16 with a two-part first convolution").
"""

from __future__ import annotations

import numpy as np

CONVOLUTIONS = ("Convolution", "GroupConvolution")


def split_first_convolution(model):
    """A copy of ``model`` (an ``openvino.Model``) with its first convolution in two parts, or None where its
    first convolution's weights are not a constant."""
    from openvino import opset13 as ops

    copy = model.clone()
    first = next((op for op in copy.get_ordered_ops() if op.get_type_name() in CONVOLUTIONS), None)
    if first is None or first.input_value(1).get_node().get_type_name() != "Constant":
        return None
    weights = first.input_value(1).get_node().get_data().astype(np.float32)
    high = bfloat16_rounded(weights)
    convolve = ops.convolution if first.get_type_name() == "Convolution" else ops.group_convolution
    image = first.input_value(0)
    parts = [
        convolve(
            image,
            ops.constant(part),
            first.get_strides(),
            first.get_pads_begin(),
            first.get_pads_end(),
            first.get_dilations(),
            first.get_auto_pad(),
        )
        for part in (high, weights - high)
    ]
    summed = ops.add(*parts)
    for reader in list(first.output(0).get_target_inputs()):
        reader.replace_source_output(summed.output(0))
    copy.validate_nodes_and_infer_types()
    return copy


def bfloat16_rounded(values: np.ndarray) -> np.ndarray:
    """float32 ``values`` rounded to the nearest bfloat16 (ties to even), kept as float32.

    >>> bfloat16_rounded(np.array([1.0, 1.00390625, 1.01171875], np.float32)).tolist()
    [1.0, 1.0, 1.015625]
    """
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)
