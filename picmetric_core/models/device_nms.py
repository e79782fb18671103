"""YOLO's threshold, box mapping and class-wise greedy NMS in ``keras.ops``, on the accelerator.

Decoded rows for a YOLOv3-416 image are 3.6 MB; what survives NMS is a few hundred bytes. Running the
selection on the device, compiled, right after the network means only that leaves it. It gives the detections
:func:`picmetric_core.models.yolo.postprocess` gives on the host, up to float32 rounding.
"""

from __future__ import annotations

import keras
import numpy as np

FRAME_COLUMNS = ("scale_x", "scale_y", "dx", "dy", "width", "height")
"""Per image, where it sits in the letterboxed input (see ``yolo.Letterbox``), one row each."""


def select_detections(decoded, frames, score_threshold, iou_threshold, *, size: int, capacity: int):
    """Tensors in, tensors out (for use inside a compiled function).

    Args:
        decoded: ``(N, boxes, 5 + classes)`` rows of cx, cy, w, h (input fractions), objectness, scores.
        frames: ``(N, 6)`` float32, the columns of :data:`FRAME_COLUMNS`.
        score_threshold, iou_threshold: scalars, as ``postprocess`` takes them.
        size: the network input side; static.
        capacity: how many (box, class) pairs per image are considered; static.

    Returns:
        ``rows`` ``(N, capacity, 6)``: x1, y1, x2, y2 in image pixels, score, class id, best first;
        ``kept`` ``(N, capacity)``: which rows NMS kept; ``passing`` ``(N,)``: how many pairs reached
        the score threshold (more than ``capacity`` means the selection is incomplete).
    """
    ops = keras.ops
    boxes, classes = decoded.shape[1], decoded.shape[2] - 5
    pair_scores = ops.reshape(decoded[..., 5:], (-1, boxes * classes))
    passing = ops.sum(ops.cast(pair_scores >= score_threshold, "int32"), axis=1)
    # top_k puts equal scores in index order, i.e. by box within a class: the host NMS's order too.
    scores, pair_index = ops.top_k(pair_scores, k=min(capacity, boxes * classes), sorted=True)
    box_index, class_index = pair_index // classes, pair_index % classes
    centres = ops.take_along_axis(decoded[..., :4], ops.expand_dims(box_index, -1), axis=1)
    corners = _image_corners(centres, frames, size)
    x1, y1, x2, y2 = (corners[..., i] for i in range(4))
    valid = ops.logical_and(scores >= score_threshold, ops.logical_and(x2 > x1, y2 > y1))
    suppresses = ops.logical_and(_pairwise_iou(corners) > iou_threshold, _same_class_earlier(class_index))
    kept = _greedy_keep(valid, suppresses)
    rows = ops.concatenate(
        [corners, ops.expand_dims(scores, -1), ops.expand_dims(ops.cast(class_index, "float32"), -1)], axis=-1
    )
    return rows, kept, passing


def _image_corners(centres, frames, size: int):
    """``(N, K, 4)`` cx, cy, w, h input fractions to x1, y1, x2, y2 image pixels, clipped to the image."""
    ops = keras.ops
    scale_x, scale_y, dx, dy, width, height = (ops.expand_dims(frames[:, i], -1) for i in range(len(FRAME_COLUMNS)))
    cx = (centres[..., 0] * size - dx) / scale_x
    cy = (centres[..., 1] * size - dy) / scale_y
    half_w = centres[..., 2] * size / scale_x / 2
    half_h = centres[..., 3] * size / scale_y / 2
    return ops.stack(
        [
            ops.clip(cx - half_w, 0.0, width),
            ops.clip(cy - half_h, 0.0, height),
            ops.clip(cx + half_w, 0.0, width),
            ops.clip(cy + half_h, 0.0, height),
        ],
        axis=-1,
    )


def _pairwise_iou(corners):
    """``(N, K, K)`` IoU, computed as ``nms.greedy_nms`` computes it."""
    ops = keras.ops
    a, b = ops.expand_dims(corners, 2), ops.expand_dims(corners, 1)
    area = ops.relu(corners[..., 2] - corners[..., 0]) * ops.relu(corners[..., 3] - corners[..., 1])
    ix = ops.relu(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]))
    iy = ops.relu(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]))
    inter = ix * iy
    union = ops.expand_dims(area, 2) + ops.expand_dims(area, 1) - inter
    return inter / ops.maximum(union, 1e-9)


def _same_class_earlier(class_index):
    """``[n, i, j]``: pair i ranks above pair j and both are the same class (so i may suppress j)."""
    ops = keras.ops
    count = class_index.shape[1]
    earlier = np.triu(np.ones((count, count), bool), k=1)
    same = ops.equal(ops.expand_dims(class_index, 2), ops.expand_dims(class_index, 1))
    return ops.logical_and(same, earlier)


def _greedy_keep(valid, suppresses):
    """Greedy NMS, exactly: j is kept iff valid and no kept i with ``suppresses[i, j]``.

    Iterated to its fixed point: a pair's answer is final once every pair that may suppress it has
    its final answer, so the loop runs as many times as the longest suppression chain (a handful on
    photos), not once per box as the sequential loop would.
    """
    ops = keras.ops

    def step(keep, _changed):
        blocked = ops.any(ops.logical_and(ops.expand_dims(keep, 2), suppresses), axis=1)
        new_keep = ops.logical_and(valid, ops.logical_not(blocked))
        return new_keep, ops.any(ops.not_equal(new_keep, keep))

    keep, _ = ops.while_loop(
        lambda _keep, changed: changed,
        step,
        (valid, ops.convert_to_tensor(True)),
        maximum_iterations=valid.shape[1] + 1,
    )
    return keep
