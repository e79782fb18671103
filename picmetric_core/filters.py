"""Re-filtering stored raw results by the thresholds a viewer picks, without running a network."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from picmetric_core.results import Analysis, Detection, Face

# What the networks keep (low, so a viewer can go lower than the defaults below).
RAW_DETECTION_SCORE = 0.1
RAW_NMS_IOU = 0.9


@dataclass(frozen=True)
class DisplayThresholds:
    """What is shown by default; sliders in the UI and query parameters in the API change these."""

    min_detection_score: float = 0.25
    nms_iou: float = 0.45
    min_face_score: float = 0.9


DEFAULT_THRESHOLDS = DisplayThresholds()


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS over ``boxes`` (N×4 x1,y1,x2,y2); returns the kept indices, best first."""
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


def filter_detections(
    detections: tuple[Detection, ...] | list[Detection], min_score: float, nms_iou: float
) -> list[Detection]:
    """Detections at or above ``min_score`` after class-wise NMS at ``nms_iou``, best first."""
    kept: list[Detection] = []
    candidates = [d for d in detections if d.score >= min_score]
    for class_id in sorted({d.class_id for d in candidates}):
        same = [d for d in candidates if d.class_id == class_id]
        boxes = np.array([d.box.as_list() for d in same], dtype=np.float64)
        scores = np.array([d.score for d in same], dtype=np.float64)
        kept.extend(same[i] for i in non_max_suppression(boxes, scores, nms_iou))
    return sorted(kept, key=lambda d: d.score, reverse=True)


def filter_faces(faces: tuple[Face, ...] | list[Face], min_score: float) -> list[Face]:
    return [f for f in faces if f.score >= min_score]


def shown(analysis: Analysis, thresholds: DisplayThresholds = DEFAULT_THRESHOLDS) -> Analysis:
    """The analysis as a viewer sees it at ``thresholds``."""
    return replace(
        analysis,
        detections=tuple(filter_detections(analysis.detections, thresholds.min_detection_score, thresholds.nms_iou)),
        faces=tuple(filter_faces(analysis.faces, thresholds.min_face_score)),
    )
