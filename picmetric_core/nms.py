"""Class-wise greedy non-maximum suppression: the detector's and the display filters' one implementation.

Both keep, per class, the best box and drop any box overlapping a kept one by more than ``iou_threshold``
(intersection over union), best first; equal scores keep their input order. OpenCV's
``cv2.dnn.NMSBoxesBatched`` does the work. It agrees with :func:`greedy_nms` (kept as the plain reference)
on every box with a positive area; boxes without one can suppress each other in OpenCV, so they are
dropped first (a detection always has an area).
"""

from __future__ import annotations

import cv2
import numpy as np


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS over one class's ``boxes`` (N×4 x1, y1, x2, y2); the kept indices, best first.

    >>> greedy_nms(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), np.array([0.9, 0.8, 0.7]), 0.5)
    [0, 2]
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        ix = np.clip(np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


def class_wise_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes that survive NMS within their class, best score first.

    Equal scores come in class order, then input order (as suppressing one class after another and
    sorting by score stably would give them). Boxes without area are never kept.

    Args:
        boxes: (N, 4) x1, y1, x2, y2.
        scores: (N,) scores; compared as float32, as the networks produce them.
        class_ids: (N,) integer class of each box.
        iou_threshold: a box overlapping a better one of its class by more than this is dropped.

    >>> class_wise_nms(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8, 0.9]),
    ...                np.array([1, 1, 0]), 0.5).tolist()
    [2, 0]
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    class_ids = np.asarray(class_ids, np.int64).reshape(-1)
    candidates = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    if candidates.size == 0:
        return np.zeros(0, np.int64)
    chosen = boxes[candidates]
    rects = np.column_stack([chosen[:, :2], chosen[:, 2:] - chosen[:, :2]])
    kept = candidates[
        np.asarray(
            cv2.dnn.NMSBoxesBatched(
                rects, scores[candidates], class_ids[candidates].astype(np.int32), float("-inf"), float(iou_threshold)
            ),
            np.int64,
        ).reshape(-1)
    ]
    return kept[np.lexsort((kept, class_ids[kept], -scores[kept]))]
