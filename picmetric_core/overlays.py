"""Drawing results over an image. Each annotator takes an RGB image and results and returns a new image.

Line widths and fonts scale with the image; labels stay inside the frame on a filled background
whose text colour is chosen for contrast.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from picmetric_core.filters import DEFAULT_THRESHOLDS, DisplayThresholds, shown
from picmetric_core.intake.images import DecodedImage
from picmetric_core.results import Analysis, Box, Detection, Face

FONT = cv2.FONT_HERSHEY_SIMPLEX
FACE_COLOR = (0, 200, 255)
LANDMARK_COLORS = {
    "left_eye": (0, 255, 0),
    "right_eye": (0, 255, 0),
    "nose": (255, 64, 64),
    "mouth_left": (255, 0, 255),
    "mouth_right": (255, 0, 255),
}


@dataclass(frozen=True)
class Overlays:
    detections_png: bytes
    faces_png: bytes


@dataclass(frozen=True)
class _Style:
    thickness: int
    font_scale: float
    font_thickness: int
    radius: int

    @classmethod
    def for_image(cls, rgb: np.ndarray) -> _Style:
        short_side = min(rgb.shape[:2])
        return cls(
            thickness=max(1, round(short_side / 250)),
            font_scale=max(0.45, short_side / 600),
            font_thickness=max(1, round(short_side / 400)),
            radius=max(2, round(short_side / 120)),
        )


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per class (golden-ratio hue steps keep neighbours apart)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _draw_label(canvas: np.ndarray, text: str, box: Box, color: tuple[int, int, int], style: _Style) -> None:
    height, width = canvas.shape[:2]
    (tw, th), baseline = cv2.getTextSize(text, FONT, style.font_scale, style.font_thickness)
    pad = max(2, style.thickness)
    label_w, label_h = tw + 2 * pad, th + baseline + 2 * pad
    x = int(min(max(box.x1, 0), max(width - label_w, 0)))
    above = int(box.y1) - label_h
    y = above if above >= 0 else int(min(max(box.y1, 0), max(height - label_h, 0)))
    cv2.rectangle(canvas, (x, y), (x + label_w, y + label_h), color, thickness=-1)
    cv2.putText(
        canvas,
        text,
        (x + pad, y + pad + th),
        FONT,
        style.font_scale,
        _text_color(color),
        style.font_thickness,
        cv2.LINE_AA,
    )


def _draw_box(canvas: np.ndarray, box: Box, color: tuple[int, int, int], style: _Style) -> None:
    cv2.rectangle(
        canvas, (int(box.x1), int(box.y1)), (int(box.x2), int(box.y2)), color, style.thickness, cv2.LINE_AA
    )


def annotate_detections(rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``rgb`` with a labelled box per detection (weakest drawn first, so the best is on top)."""
    canvas = np.ascontiguousarray(rgb).copy()
    style = _Style.for_image(canvas)
    for det in sorted(detections, key=lambda d: d.score):
        color = class_color(det.class_id)
        _draw_box(canvas, det.box, color, style)
        _draw_label(canvas, f"{det.label} {det.score:.0%}", det.box, color, style)
    return canvas


def annotate_faces(rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, score and five landmarks."""
    canvas = np.ascontiguousarray(rgb).copy()
    style = _Style.for_image(canvas)
    for face in faces:
        _draw_box(canvas, face.box, FACE_COLOR, style)
        for name, point in face.landmarks.items():
            cv2.circle(canvas, (int(point.x), int(point.y)), style.radius, LANDMARK_COLORS[name], -1, cv2.LINE_AA)
        _draw_label(canvas, f"face {face.score:.0%}", face.box, FACE_COLOR, style)
    return canvas


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError("could not encode PNG")
    return buffer.tobytes()


def render_overlays(
    image: np.ndarray | DecodedImage, analysis: Analysis, thresholds: DisplayThresholds = DEFAULT_THRESHOLDS
) -> Overlays:
    """Both overlays as PNG bytes, showing what a viewer sees at ``thresholds``."""
    rgb = image.rgb if isinstance(image, DecodedImage) else image
    if analysis.width and rgb.shape[1] != analysis.width:
        # A large image's overlays are drawn on its bounded copy (DecodedImage.rgb); boxes are in the original's pixels.
        analysis = analysis.with_boxes_scaled(rgb.shape[1] / analysis.width, rgb.shape[1], rgb.shape[0])
    visible = shown(analysis, thresholds)
    return Overlays(
        detections_png=encode_png(annotate_detections(rgb, visible.detections)),
        faces_png=encode_png(annotate_faces(rgb, visible.faces)),
    )
