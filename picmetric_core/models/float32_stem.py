"""A converted network cut in two before its second convolution, so that its stem can run in float32.

Under bfloat16, the first convolution sees the photo's pixels with 8 bits of mantissa, and that alone is what
moved YOLOv3-tiny's scores by 0.037 and flipped one of EfficientNet-Lite2's top-1 classes (measured by cutting
the network at each of its first convolutions; the rest in bfloat16 moves scores by at most 0.009). OpenVINO's
CPU plugin takes one precision per compiled model, so the stem and the body are compiled apart
(docs/performance.md, "bfloat16 with a float32 stem").
"""

from __future__ import annotations

from dataclasses import dataclass

HEAVY_OPS = frozenset({"Convolution", "GroupConvolution", "MatMul"})


@dataclass(frozen=True)
class StemAndBody:
    """``stem``: the network's input up to the tensor its second convolution reads; ``body``: the rest."""

    stem: object  # openvino.Model
    body: object  # openvino.Model


def cut_after_stem(model) -> StemAndBody | None:
    """``model`` (an ``openvino.Model``) as a stem and a body, or None where no single tensor separates them
    (one input, at least two convolutions, and nothing after the cut reading the input or the stem's insides).
    """
    import openvino as ov

    second = _second_heavy_op_name(model)
    if second is None or len(model.inputs) != 1:
        return None
    stem_copy, body_copy = model.clone(), model.clone()
    cut = _op_named(stem_copy, second).input_value(0)
    stem = ov.Model([cut], stem_copy.get_parameters(), f"{model.get_friendly_name()}-stem")

    source = _op_named(body_copy, second).input_value(0)
    entry = ov.opset13.parameter(source.get_partial_shape(), source.get_element_type(), name="stem_output")
    for reader in list(source.get_target_inputs()):
        reader.replace_source_output(entry.output(0))
    try:
        body = ov.Model(body_copy.get_results(), [entry], f"{model.get_friendly_name()}-body")
    except RuntimeError:  # the body still reads the input another way: no single cut
        return None
    return StemAndBody(stem, body)


def _second_heavy_op_name(model) -> str | None:
    heavy = [op for op in model.get_ordered_ops() if op.get_type_name() in HEAVY_OPS]
    return heavy[1].get_friendly_name() if len(heavy) >= 2 else None


def _op_named(model, name: str):
    return next(op for op in model.get_ordered_ops() if op.get_friendly_name() == name)
