"""What the Live page draws onto a camera frame: boxes and labels, faces with landmarks, and a readout.

Boxes and faces are drawn by :mod:`picmetric_core.overlays` (the stored overlays' colours, label placement
and sizes); this module adds the readout of processed frames per second and latency in a corner.

Example:
    >>> import numpy as np
    >>> frame = draw_frame(np.zeros((240, 320, 3), np.uint8), [], [], "15.0 fps | 80 ms")
    >>> frame.shape, bool(frame[:24, :].any())
    ((240, 320, 3), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from picmetric_core.overlays import annotate_detections, annotate_faces
from picmetric_core.results import Box, Detection, Face, Point

READOUT_BACKGROUND = (20, 20, 20)
READOUT_TEXT = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def scaled_results(
    detections: Sequence[Detection], faces: Sequence[Face], factor: float
) -> tuple[list[Detection], list[Face]]:
    """Boxes and landmarks found on a frame resized by ``factor``, in the full frame's pixels.

    Example:
        >>> from picmetric_core.results import Box, Detection
        >>> scaled_results([Detection("dog", 16, 0.9, Box(10, 10, 20, 30))], [], 2.0)[0][0].box
        Box(x1=20.0, y1=20.0, x2=40.0, y2=60.0)
    """
    if factor == 1.0:
        return list(detections), list(faces)

    def box(b: Box) -> Box:
        return Box(b.x1 * factor, b.y1 * factor, b.x2 * factor, b.y2 * factor)

    scaled_detections = [Detection(d.label, d.class_id, d.score, box(d.box)) for d in detections]
    scaled_faces = [
        Face(f.score, box(f.box), {name: Point(p.x * factor, p.y * factor) for name, p in f.landmarks.items()})
        for f in faces
    ]
    return scaled_detections, scaled_faces


def draw_readout(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` (drawn on in place, and returned) with ``text`` on a dark band in its top-left corner."""
    height, width = rgb.shape[:2]
    scale = max(0.4, width / 1000)
    thickness = max(1, round(scale * 1.6))
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(3, round(6 * scale))
    cv2.rectangle(
        rgb,
        (0, 0),
        (min(width, text_w + 2 * pad), min(height, text_h + baseline + 2 * pad)),
        READOUT_BACKGROUND,
        thickness=-1,
    )
    cv2.putText(rgb, text, (pad, pad + text_h), _FONT, scale, READOUT_TEXT, thickness, cv2.LINE_AA)
    return rgb


def draw_frame(
    rgb: np.ndarray, detections: Sequence[Detection], faces: Sequence[Face], readout: str | None = None
) -> np.ndarray:
    """A copy of ``rgb`` with every detection, every face with its landmarks, and the readout drawn on."""
    canvas = annotate_detections(rgb, detections) if detections else np.ascontiguousarray(rgb).copy()
    if faces:
        canvas = annotate_faces(canvas, faces)
    if readout:
        draw_readout(canvas, readout)
    return canvas
