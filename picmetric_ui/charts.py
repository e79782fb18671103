"""Plotly figures for results and history. Pure functions: data in, figure out, no widgets."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import numpy as np
import plotly.graph_objects as go

from picmetric_core.labels import percent
from picmetric_core.overlays import FACE_COLOR, class_color
from picmetric_core.results import Analysis, Classification, Detection, Face
from picmetric_core.store.history import LabelCount, TimeCount

FONT_SIZE = 15  # legible on a projector
PRIMARY = "#2563eb"


def css_rgb(color: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*color)


def _layout(fig: go.Figure, title: str, height: int, x_title: str = "", y_title: str = "") -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        font={"size": FONT_SIZE},
        showlegend=False,
        xaxis_title=x_title,
        yaxis_title=y_title,
    )
    return fig


def _bar_height(count: int) -> int:
    return 120 + 36 * max(count, 1)


def _score_axis(fig: go.Figure) -> None:
    fig.update_yaxes(autorange="reversed", tickfont={"size": FONT_SIZE})
    fig.update_xaxes(range=[0, 1.12], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1.0])
    fig.update_traces(textposition="outside", cliponaxis=False, textfont={"size": FONT_SIZE})


def empty_chart(fig: go.Figure, message: str) -> go.Figure:
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=message,
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font={"size": FONT_SIZE, "color": "#64748b"},
    )
    return fig


def classifier_chart(classifications: Sequence[Classification], model_name: str = "classifier") -> go.Figure:
    """Horizontal bars of the top classes' probabilities, best at the top."""
    top = list(classifications)[:5]
    fig = go.Figure(
        go.Bar(
            x=[c.score for c in top],
            y=[c.label for c in top],
            orientation="h",
            marker_color=PRIMARY,
            text=[percent(c.score) for c in top],
        )
    )
    _score_axis(fig)
    return _layout(fig, f"{model_name}: top {len(top)} classes", _bar_height(len(top)), "probability")


def detections_chart(detections: Sequence[Detection], model_name: str = "detector") -> go.Figure:
    """One bar per detection, most confident at the top, coloured as in the overlay."""
    ordered = sorted(detections, key=lambda d: -d.score)
    numbered: dict[str, int] = {}
    names = []
    for det in ordered:
        numbered[det.label] = numbered.get(det.label, 0) + 1
        names.append(f"{det.label} #{numbered[det.label]}")
    fig = go.Figure(
        go.Bar(
            x=[d.score for d in ordered],
            y=names,
            orientation="h",
            marker_color=[css_rgb(class_color(d.class_id)) for d in ordered],
            text=[percent(d.score) for d in ordered],
        )
    )
    _score_axis(fig)
    title = f"{model_name}: {len(ordered)} object{'s' if len(ordered) != 1 else ''}"
    if not ordered:
        empty_chart(fig, "No objects at this confidence")
    return _layout(fig, title, _bar_height(len(ordered)), "confidence")


def faces_chart(faces: Sequence[Face], model_name: str = "faces") -> go.Figure:
    """One bar per face, in the order the overlay numbers them."""
    fig = go.Figure(
        go.Bar(
            x=[f.score for f in faces],
            y=[f"face {i + 1}" for i in range(len(faces))],
            orientation="h",
            marker_color=css_rgb(FACE_COLOR),
            text=[percent(f.score) for f in faces],
        )
    )
    _score_axis(fig)
    title = f"{model_name}: {len(faces)} face{'s' if len(faces) != 1 else ''}"
    if not faces:
        empty_chart(fig, "No faces at this confidence")
    return _layout(fig, title, _bar_height(len(faces)), "confidence")


def label_frequency_chart(counts: Sequence[LabelCount], title: str = "Objects found") -> go.Figure:
    """How many analyses found each label, most frequent at the top."""
    fig = go.Figure(
        go.Bar(
            x=[c.count for c in counts],
            y=[c.label for c in counts],
            orientation="h",
            marker_color=PRIMARY,
            text=[c.count for c in counts],
            textposition="auto",
        )
    )
    fig.update_yaxes(autorange="reversed", tickfont={"size": FONT_SIZE})
    _count_axis(fig, [c.count for c in counts], "x")
    if not counts:
        empty_chart(fig, "Nothing analysed yet")
    return _layout(fig, title, _bar_height(len(counts)), "analyses")


def _count_axis(fig: go.Figure, counts: Sequence[int], axis: str) -> None:
    step = max(1, -(-max(counts, default=1) // 5))
    getattr(fig, f"update_{axis}axes")(tickformat=",d", dtick=step, rangemode="tozero")


def over_time_chart(counts: Sequence[TimeCount], title: str = "Analyses per day") -> go.Figure:
    """Analyses per day (or month) as bars, oldest on the left."""
    fig = go.Figure(
        go.Bar(
            x=[f"{c.start:%d %b %Y}" for c in counts],
            y=[c.count for c in counts],
            marker_color=PRIMARY,
            text=[c.count for c in counts],
            textposition="outside",
            cliponaxis=False,
        )
    )
    # Categories, so one day is one bar of a sensible width rather than a sliver on an hours axis.
    fig.update_xaxes(type="category")
    fig.update_traces(width=0.6 if len(counts) > 2 else 0.3)
    _count_axis(fig, [c.count for c in counts], "y")
    if not counts:
        empty_chart(fig, "Nothing analysed yet")
    return _layout(fig, title, 320, "", "analyses")


def _jpeg_data_uri(rgb: np.ndarray) -> str:
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    if not ok:
        raise ValueError("could not encode JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def interactive_view(rgb: np.ndarray, visible: Analysis) -> go.Figure:
    """The photo with its objects and faces as hoverable boxes; the legend toggles each class on and off.

    Each box is a closed outline filled almost transparently, so hovering anywhere on it shows its
    label, confidence and corners.
    """
    height, width = rgb.shape[:2]
    # A JPEG data URI, not the pixel array: the figure's JSON stays ~50 KB instead of several MB.
    fig = go.Figure(go.Image(source=_jpeg_data_uri(rgb), hoverinfo="skip"))
    shown_classes: set[str] = set()
    boxes = [
        (d.label, d.score, d.box, class_color(d.class_id)) for d in sorted(visible.detections, key=lambda d: -d.score)
    ]
    boxes += [(f"face {i}", f.score, f.box, FACE_COLOR) for i, f in enumerate(visible.faces, start=1)]
    for label, score, box, color in boxes:
        group = "face" if label.startswith("face ") else label
        corners = f"({box.x1:.0f}, {box.y1:.0f}) – ({box.x2:.0f}, {box.y2:.0f})"
        fig.add_trace(
            go.Scatter(
                x=[box.x1, box.x2, box.x2, box.x1, box.x1],
                y=[box.y1, box.y1, box.y2, box.y2, box.y1],
                mode="lines",
                line={"color": css_rgb(color), "width": 3},
                fill="toself",
                fillcolor="rgba({},{},{},0.08)".format(*color),
                hoveron="fills",
                hoverinfo="text",
                text=f"{label} {percent(score)}<br>box {corners}",
                name=group,
                legendgroup=group,
                showlegend=group not in shown_classes,
            )
        )
        shown_classes.add(group)
    fig.update_xaxes(visible=False, range=[0, width])
    fig.update_yaxes(visible=False, range=[height, 0], scaleanchor="x")
    fig.update_layout(
        height=max(320, min(640, round(560 * height / max(width, 1)))),
        margin={"l": 0, "r": 0, "t": 10, "b": 0},
        font={"size": FONT_SIZE},
        legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0, "title": {"text": "Show: "}},
        hoverlabel={"font": {"size": FONT_SIZE}},
        showlegend=bool(boxes),
    )
    return fig
