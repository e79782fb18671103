"""Re-filtering stored raw results by the thresholds a viewer picks, without running a network."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from picmetric_core.nms import class_wise_nms
from picmetric_core.results import RAW_DETECTION_SCORE, RAW_FACE_SCORE, RAW_NMS_IOU, Analysis, Detection, Face

__all__ = [
    "DEFAULT_THRESHOLDS",
    "RAW_DETECTION_SCORE",
    "RAW_FACE_SCORE",
    "RAW_NMS_IOU",
    "SLIDER_RANGES",
    "DisplayThresholds",
    "SliderRange",
    "filter_detections",
    "filter_faces",
    "shown",
]


@dataclass(frozen=True)
class DisplayThresholds:
    """What is shown by default; sliders in the UI and query parameters in the API change these."""

    min_detection_score: float = 0.25
    nms_iou: float = 0.45
    min_face_score: float = 0.9


DEFAULT_THRESHOLDS = DisplayThresholds()


@dataclass(frozen=True)
class SliderRange:
    """Where a threshold slider starts and ends, its default and its step (see :data:`SLIDER_RANGES`).

    >>> SLIDER_RANGES["min_face_score"].low, SLIDER_RANGES["min_detection_score"].low
    (0.6, 0.1)
    """

    low: float
    high: float
    default: float
    step: float


SLIDER_RANGES: dict[str, SliderRange] = {
    # Below the raw cut-offs there is nothing stored to show, so no slider goes there.
    "min_detection_score": SliderRange(RAW_DETECTION_SCORE, 1.0, DEFAULT_THRESHOLDS.min_detection_score, 0.05),
    "nms_iou": SliderRange(0.1, RAW_NMS_IOU, DEFAULT_THRESHOLDS.nms_iou, 0.05),
    "min_face_score": SliderRange(RAW_FACE_SCORE, 1.0, DEFAULT_THRESHOLDS.min_face_score, 0.01),
}
"""Each :class:`DisplayThresholds` field's slider, keyed by the field's name."""


def filter_detections(
    detections: tuple[Detection, ...] | list[Detection], min_score: float, nms_iou: float
) -> list[Detection]:
    """Detections at or above ``min_score`` after class-wise NMS at ``nms_iou``, best first."""
    candidates = [d for d in detections if d.score >= min_score]
    if not candidates:
        return []
    boxes = np.array([d.box.as_list() for d in candidates], dtype=np.float64)
    scores = np.array([d.score for d in candidates], dtype=np.float64)
    class_ids = np.array([d.class_id for d in candidates], dtype=np.int64)
    return [candidates[i] for i in class_wise_nms(boxes, scores, class_ids, nms_iou)]


def filter_faces(faces: tuple[Face, ...] | list[Face], min_score: float) -> list[Face]:
    return [f for f in faces if f.score >= min_score]


def shown(analysis: Analysis, thresholds: DisplayThresholds = DEFAULT_THRESHOLDS) -> Analysis:
    """The analysis as a viewer sees it at ``thresholds``."""
    return replace(
        analysis,
        detections=tuple(filter_detections(analysis.detections, thresholds.min_detection_score, thresholds.nms_iou)),
        faces=tuple(filter_faces(analysis.faces, thresholds.min_face_score)),
    )
