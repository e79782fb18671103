"""The counting line: two clicks on the clip's poster frame set it, a button clears it.

The poster is shown by ``streamlit-image-coordinates`` (its script is bundled in the package, so the page
still loads nothing from other hosts); the clicks are kept per clip in the session.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from picmetric_core.results import Point
from picmetric_core.video.results import CountingLine
from picmetric_ui.video_data import frame_point, line_from_points

LINE_COLOR = (255, 255, 255)  # as on the annotated clip, over a dark edge that keeps it visible on bright frames
EDGE_COLOR = (15, 23, 42)
IN_COLOR = (34, 197, 94)
_POINTS = "_video_line_points"
_LAST_CLICK = "_video_line_click"


def _scale(rgb: np.ndarray) -> float:
    return max(rgb.shape[:2]) / 640


def inward_direction(line: CountingLine) -> tuple[float, float]:
    """The unit vector of an "in" crossing: to the right of the line as it runs from ``start`` to ``end``
    (image axes, y down).

    Example:
        >>> inward_direction(CountingLine(Point(0, 0), Point(10, 0)))
        (0.0, 1.0)
    """
    dx, dy = line.end.x - line.start.x, line.end.y - line.start.y
    length = math.hypot(dx, dy) or 1.0
    return -dy / length, dx / length


def draw_line(rgb: np.ndarray, points: list[Point]) -> np.ndarray:
    """The poster with the clicked points, the line between them and an arrow that points "in"."""
    out = np.ascontiguousarray(rgb).copy()
    scale = _scale(out)
    thickness = max(2, round(3 * scale))
    dots = [(round(p.x), round(p.y)) for p in points[:2]]
    radius = max(4, round(7 * scale))
    line = line_from_points(points)
    if line is not None:
        cv2.line(out, dots[0], dots[1], EDGE_COLOR, thickness + 2, cv2.LINE_AA)
        cv2.line(out, dots[0], dots[1], LINE_COLOR, thickness, cv2.LINE_AA)
    for dot in dots:
        cv2.circle(out, dot, radius + 1, EDGE_COLOR, -1, cv2.LINE_AA)
        cv2.circle(out, dot, radius, LINE_COLOR, -1, cv2.LINE_AA)
    if line is None:
        return out
    middle = ((line.start.x + line.end.x) / 2, (line.start.y + line.end.y) / 2)
    ux, uy = inward_direction(line)
    reach = 40 * scale
    tip = (round(middle[0] + ux * reach), round(middle[1] + uy * reach))
    cv2.arrowedLine(out, (round(middle[0]), round(middle[1])), tip, IN_COLOR, thickness, cv2.LINE_AA, tipLength=0.35)
    font, size, weight = cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, max(1, round(2 * scale))
    (text_w, text_h), _ = cv2.getTextSize("in", font, size, weight)
    gap = 8 * scale + max(text_w, text_h) / 2  # the word's centre sits beyond the tip, whichever way it points
    centre = (tip[0] + ux * gap, tip[1] + uy * gap)
    corner = (round(centre[0] - text_w / 2), round(centre[1] + text_h / 2))
    cv2.putText(out, "in", corner, font, size, EDGE_COLOR, weight + 2, cv2.LINE_AA)
    cv2.putText(out, "in", corner, font, size, IN_COLOR, weight, cv2.LINE_AA)
    return out


def clear_line(clip_key: str) -> None:
    st.session_state.setdefault(_POINTS, {}).pop(clip_key, None)


def counting_line_ui(poster: np.ndarray, clip_key: str) -> CountingLine | None:
    """The poster frame to click on (two clicks: the line's start and end; a third starts a new line),
    a "Clear line" button, and what is set. Returns the line, or ``None`` when none is set."""
    points: list[Point] = st.session_state.setdefault(_POINTS, {}).setdefault(clip_key, [])
    height, width = poster.shape[:2]
    click = streamlit_image_coordinates(
        draw_line(poster, points),
        width="stretch",
        key=f"line-picker-{clip_key}",
        cursor="crosshair",
        image_format="JPEG",
        jpeg_quality=85,
    )
    if click and click.get("unix_time") != st.session_state.get(_LAST_CLICK):
        st.session_state[_LAST_CLICK] = click.get("unix_time")
        if len(points) >= 2:
            points.clear()
        points.append(frame_point(click, width, height))
        st.rerun()
    line = line_from_points(points)
    text, button = st.columns([3, 1], vertical_alignment="center")
    if line is None:
        hint = "Click the frame once more to end the line." if points else "Click two points on the frame."
        text.caption(f"Counting line (optional): {hint} Objects crossing it are counted in and out per class.")
    else:
        text.caption(
            f"Counting line from ({line.start.x:.0f}, {line.start.y:.0f}) to ({line.end.x:.0f}, {line.end.y:.0f}); "
            "crossing it the way the green arrow points counts as in."
        )
    button.button(
        "Clear line",
        icon=":material/backspace:",
        key=f"clear-line-{clip_key}",
        on_click=clear_line,
        args=(clip_key,),
        disabled=not points,
        width="stretch",
    )
    return line
