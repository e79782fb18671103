"""JSON views of an analysis: the full one, and the old Flask API's shape for old clients."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from picmetric_core.filters import DEFAULT_THRESHOLDS, DisplayThresholds, shown
from picmetric_core.results import Analysis

LEGACY_RESNET_TOP = 3
# The old API listed objects from 50 % (ImageAI's default); v1 and the UI show more.
LEGACY_THRESHOLDS = DisplayThresholds(min_detection_score=0.5)
NO_FACES = "no_faces"


def full_view(
    analysis: Analysis,
    *,
    thresholds: DisplayThresholds = DEFAULT_THRESHOLDS,
    urls: dict[str, str | None] | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything: raw results, what is shown at ``thresholds``, models, timings, links."""
    visible = shown(analysis, thresholds).to_dict()
    return {
        **analysis.to_dict(),
        "shown": {
            "thresholds": asdict(thresholds),
            "detections": visible["detections"],
            "faces": visible["faces"],
        },
        "urls": urls or {},
        "record": record or {},
    }


def legacy_view(
    analysis: Analysis,
    *,
    original_url: str,
    detections_url: str,
    faces_url: str,
    thresholds: DisplayThresholds = LEGACY_THRESHOLDS,
    error: str = "",
) -> dict[str, str | None]:
    """The old API's response: ``resnet``/``yolov3`` are JSON strings, as old clients parse them.

    The old API reported probabilities for ResNet and percentages for YOLO, with underscores in
    ImageNet names (``studio_couch``), official COCO names (``potted plant``), objects from 50 % and
    ``null`` for ``yolov3`` when it found none; all of that is kept.
    """
    visible = shown(analysis, thresholds)
    resnet = {
        c.label.replace(" ", "_"): str(c.score) for c in analysis.classifications[:LEGACY_RESNET_TOP]
    }
    yolo: dict[str, float] = {}
    for det in visible.detections:
        yolo[det.label] = max(yolo.get(det.label, 0.0), det.score * 100)
    return {
        "error": error,
        "faces_source": faces_url if visible.faces else NO_FACES,
        "hash": analysis.md5,
        "original": original_url,
        "resnet": json.dumps(resnet),
        "yolov3": json.dumps({label: str(score) for label, score in yolo.items()}) if yolo else None,
        "yolov3_source": detections_url,
    }
