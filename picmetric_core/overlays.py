"""Drawing results over an image. Each annotator takes an RGB image and results and returns a new image.

Line widths and fonts are sized for the width the overlays are shown at; labels stay inside the frame,
never hide one another, and sit on a filled background whose text colour is chosen for contrast.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np

from picmetric_core.filters import DEFAULT_THRESHOLDS, DisplayThresholds, shown
from picmetric_core.intake.images import DecodedImage
from picmetric_core.labels import percent
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


OverlayKind = Literal["detections", "faces"]
OVERLAY_KINDS: tuple[OverlayKind, ...] = get_args(OverlayKind)
"""The two overlays: the detector's boxes, the faces with their landmarks."""


@dataclass(frozen=True)
class Overlays:
    detections_png: bytes
    faces_png: bytes


@dataclass(frozen=True)
class OverlayImages:
    """Both overlays as RGB pixels, before any encoding."""

    detections: np.ndarray
    faces: np.ndarray


# The overlays are shown ~300–450 px wide; sizes are chosen so that labels stay readable at the narrow end.
DISPLAY_WIDTH = 320
LABEL_TEXT_PX = 11  # cap height of label text at DISPLAY_WIDTH (the filled label is ~15 px tall there)
LINE_PX = 2.5  # box line width at DISPLAY_WIDTH
LANDMARK_LEGEND = {
    "eyes": LANDMARK_COLORS["left_eye"],
    "nose": LANDMARK_COLORS["nose"],
    "mouth": LANDMARK_COLORS["mouth_left"],
}
_HERSHEY_CAP_HEIGHT = 22  # cv2.getTextSize's height for FONT at scale 1.0


@dataclass(frozen=True)
class _Style:
    thickness: int
    font_scale: float
    font_thickness: int
    radius: int
    pad: int

    @classmethod
    def for_image(cls, rgb: np.ndarray) -> _Style:
        """Sizes in image pixels that look the same on every image once it is shown DISPLAY_WIDTH wide."""
        height, width = rgb.shape[:2]
        scale = max(width, height * 4 / 3) / DISPLAY_WIDTH  # portrait images are shown narrower
        text_px = max(9.0, LABEL_TEXT_PX * scale)
        return cls(
            thickness=max(2, round(LINE_PX * scale)),
            font_scale=text_px / _HERSHEY_CAP_HEIGHT,
            font_thickness=max(1, round(text_px / 11)),
            radius=max(3, round(2.5 * scale)),
            pad=max(2, round(2 * scale)),
        )


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle in pixels, ``x2``/``y2`` exclusive."""

    x1: int
    y1: int
    x2: int
    y2: int

    def overlap(self, other: Rect) -> int:
        """The area both rectangles cover."""
        width = min(self.x2, other.x2) - max(self.x1, other.x1)
        height = min(self.y2, other.y2) - max(self.y1, other.y1)
        return max(width, 0) * max(height, 0)


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per class (golden-ratio hue steps keep neighbours apart)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (by its WCAG relative luminance)."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = background
    luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    # Contrast with black (L + 0.05) / 0.05 beats contrast with white 1.05 / (L + 0.05) above L ≈ 0.179.
    return (0, 0, 0) if luminance > 0.179 else (255, 255, 255)


def place_labels(sizes: Sequence[tuple[int, int]], boxes: Sequence[Box], frame: tuple[int, int]) -> list[Rect]:
    """Where to put each box's label so that labels collide as little as possible.

    Labels are placed in the given order (pass the most important first); each takes, of the spots
    around its box (above, below, inside at the top or bottom, left- or right-aligned, then further
    away), the first that overlaps no label placed before it. When every spot near the box is taken
    the nearest free spot in the frame is used, and only when the frame is full does a label overlap.

    Args:
        sizes: Each label's (width, height) in pixels.
        boxes: The box each label belongs to.
        frame: The image's (width, height).

    Returns:
        One rectangle per label, inside the frame when the label fits in it.
    """
    width, height = frame
    placed: list[Rect] = []
    for (w, h), box in zip(sizes, boxes, strict=True):

        def at(x: float, y: float, w: int = w, h: int = h) -> Rect:
            x = int(min(max(x, 0), max(width - w, 0)))
            y = int(min(max(y, 0), max(height - h, 0)))
            return Rect(x, y, x + w, y + h)

        def cost(rect: Rect) -> int:
            return sum(rect.overlap(other) for other in placed)

        near = [
            at(x, y)
            for step in range(4)
            for x in (box.x1, box.x2 - w)
            for y in (box.y1 - h * (step + 1), box.y2 + h * step, box.y1 + h * step, box.y2 - h * (step + 1))
        ]
        best = next((rect for rect in near if cost(rect) == 0), None)
        if best is None:
            anywhere = [
                at(x, y)
                for y in range(0, max(height - h, 0) + 1, max(h // 2, 1))
                for x in range(0, max(width - w, 0) + 1, max(w // 4, 1))
            ]
            free = [rect for rect in anywhere if cost(rect) == 0]
            pool = free or near + anywhere
            best = min(pool, key=lambda r: (cost(r), abs(r.x1 - box.x1) + abs(r.y1 - box.y1)))
        placed.append(best)
    return placed


def _label_size(text: str, style: _Style) -> tuple[int, int]:
    (tw, th), baseline = cv2.getTextSize(text, FONT, style.font_scale, style.font_thickness)
    return tw + 2 * style.pad, th + baseline + 2 * style.pad


def _draw_label(canvas: np.ndarray, text: str, rect: Rect, color: tuple[int, int, int], style: _Style) -> None:
    cv2.rectangle(canvas, (rect.x1, rect.y1), (rect.x2 - 1, rect.y2 - 1), color, thickness=-1)
    (_, th), _ = cv2.getTextSize(text, FONT, style.font_scale, style.font_thickness)
    origin = (rect.x1 + style.pad, rect.y1 + style.pad + th)
    cv2.putText(canvas, text, origin, FONT, style.font_scale, text_color(color), style.font_thickness, cv2.LINE_AA)


def _draw_box(canvas: np.ndarray, box: Box, color: tuple[int, int, int], style: _Style) -> None:
    cv2.rectangle(canvas, (int(box.x1), int(box.y1)), (int(box.x2), int(box.y2)), color, style.thickness, cv2.LINE_AA)


def _draw_labels(canvas: np.ndarray, labels: Sequence[tuple[str, Box, tuple[int, int, int]]], style: _Style) -> None:
    """Labels after every box, so no box line crosses a label; placed most important first."""
    rects = place_labels(
        [_label_size(text, style) for text, _, _ in labels],
        [box for _, box, _ in labels],
        (canvas.shape[1], canvas.shape[0]),
    )
    for (text, _, color), rect in zip(labels, rects, strict=True):
        _draw_label(canvas, text, rect, color, style)


def annotate_detections(rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``rgb`` with a box per detection and a label that no other label hides."""
    canvas = np.ascontiguousarray(rgb).copy()
    style = _Style.for_image(canvas)
    best_first = sorted(detections, key=lambda d: -d.score)
    for det in reversed(best_first):  # the best box's line ends on top
        _draw_box(canvas, det.box, class_color(det.class_id), style)
    _draw_labels(
        canvas, [(f"{det.label} {percent(det.score)}", det.box, class_color(det.class_id)) for det in best_first], style
    )
    return canvas


def annotate_faces(rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, numbered score label and five landmarks."""
    canvas = np.ascontiguousarray(rgb).copy()
    style = _Style.for_image(canvas)
    for face in faces:
        _draw_box(canvas, face.box, FACE_COLOR, style)
        for name, point in face.landmarks.items():
            center = (int(point.x), int(point.y))
            cv2.circle(canvas, center, style.radius + 1, (0, 0, 0), -1, cv2.LINE_AA)  # a dark rim on light skin
            cv2.circle(canvas, center, style.radius, LANDMARK_COLORS[name], -1, cv2.LINE_AA)
    labels = [(f"face {index} {percent(face.score)}", face.box, FACE_COLOR) for index, face in enumerate(faces, 1)]
    _draw_labels(canvas, labels, style)
    return canvas


# Run-length deflate: on photos it is as small as the default strategy at level 3 and half the time (~19 ms
# for 640×480 here). Overlays are drawn when first asked for (the service keeps what it drew), not per analysis.
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def encode_png(rgb: np.ndarray) -> bytes:
    return _encode(rgb, ".png", _PNG_PARAMS)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """For showing an overlay on a page: ~30× faster to encode and ~6× smaller than the PNG."""
    return _encode(rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])


def _encode(rgb: np.ndarray, extension: str, params: list[int]) -> bytes:
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"could not encode {extension[1:].upper()}")
    return buffer.tobytes()


def draw_overlays(
    image: np.ndarray | DecodedImage, analysis: Analysis, thresholds: DisplayThresholds = DEFAULT_THRESHOLDS
) -> OverlayImages:
    """Both overlays as pixels, showing what a viewer sees at ``thresholds``."""
    rgb, visible = _visible(image, analysis, thresholds)
    return OverlayImages(annotate_detections(rgb, visible.detections), annotate_faces(rgb, visible.faces))


def render_overlay(
    image: np.ndarray | DecodedImage,
    analysis: Analysis,
    kind: OverlayKind,
    thresholds: DisplayThresholds = DEFAULT_THRESHOLDS,
) -> bytes:
    """One overlay as PNG bytes (what the store keeps under ``{md5}/{kind}.png``), at ``thresholds``.

    Example:
        >>> nothing = Analysis("0" * 32, 64, 48, (), (), (), ())
        >>> render_overlay(np.zeros((48, 64, 3), np.uint8), nothing, "faces")[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    rgb, visible = _visible(image, analysis, thresholds)
    if kind == "detections":
        return encode_png(annotate_detections(rgb, visible.detections))
    if kind == "faces":
        return encode_png(annotate_faces(rgb, visible.faces))
    raise ValueError(f"no overlay {kind!r}: one of {OVERLAY_KINDS}")


def _visible(
    image: np.ndarray | DecodedImage, analysis: Analysis, thresholds: DisplayThresholds
) -> tuple[np.ndarray, Analysis]:
    """The pixels to draw on and what is shown on them at ``thresholds``, in those pixels."""
    rgb = image.rgb if isinstance(image, DecodedImage) else image
    if analysis.width and rgb.shape[1] != analysis.width:
        # A large image's overlays are drawn on its bounded copy (DecodedImage.rgb); boxes are in the original's pixels.
        analysis = analysis.with_boxes_scaled(rgb.shape[1] / analysis.width, rgb.shape[1], rgb.shape[0])
    return rgb, shown(analysis, thresholds)


def render_overlays(
    image: np.ndarray | DecodedImage, analysis: Analysis, thresholds: DisplayThresholds = DEFAULT_THRESHOLDS
) -> Overlays:
    """Both overlays as PNG bytes (what is stored and downloaded), showing what a viewer sees at ``thresholds``."""
    drawn = draw_overlays(image, analysis, thresholds)
    return Overlays(detections_png=encode_png(drawn.detections), faces_png=encode_png(drawn.faces))
