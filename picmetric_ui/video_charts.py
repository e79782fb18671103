"""Plotly figures of a video analysis: what was seen over time, and the counting line's running totals.

Pure functions: results in, figure out, no widgets. Colours are the annotated clip's (one per class,
faces in the face colour), so a line on the chart and a box on the clip match.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from picmetric_core.overlays import FACE_COLOR, class_color
from picmetric_core.video.results import Crossing, FrameResult
from picmetric_ui.charts import FONT_SIZE, css_rgb, empty_chart
from picmetric_ui.video_data import FACES, OTHER, class_ids, clock, counts_over_time, timeline_table

OTHER_COLOR = "rgb(100,116,139)"
DASHES = {"in": "solid", "out": "dot"}


def _time_axis(fig: go.Figure, end_s: float) -> None:
    fig.update_xaxes(title="seconds into the clip", range=[-0.1, max(end_s, 1.0) + 0.1], rangemode="tozero")


def _spacing(times: pd.Series) -> float:
    """The time between two sampled frames (a bar's room), 1 s when there are not two yet."""
    gaps = times.diff().dropna()
    gaps = gaps[gaps > 0]
    return float(gaps.min()) if len(gaps) else 1.0


def _layout(fig: go.Figure, title: str, height: int, y_title: str, top: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        height=height,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        font={"size": FONT_SIZE},
        yaxis_title=y_title,
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0, "traceorder": "normal"},
        hovermode="closest",
        clickmode="event+select",
        dragmode=False,
        barmode="stack",
        bargap=0.15,
    )
    # Whole numbers only, about five ticks (plotly would write 0, 0, 1, 1 for a range of 0 to 1).
    fig.update_yaxes(rangemode="tozero", tickformat=",d", dtick=max(1, -(-top // 5)))
    return fig


def timeline_figure(frames: Sequence[FrameResult], duration_s: float, title: str = "Seen over time") -> go.Figure:
    """Objects per class (stacked bars, one per sampled frame) and faces (a line) over the clip's time;
    a click on a bar or a point seeks the player there.

    Example:
        >>> len(timeline_figure((), 4.0).data)
        1
    """
    table = timeline_table(frames)
    ids = class_ids(frames)
    times = [clock(t) for t in table["time_s"]]
    fig = go.Figure()
    for name in table.columns[1:]:
        if name == FACES:
            continue
        color = OTHER_COLOR if name == OTHER else css_rgb(class_color(ids[name]))
        fig.add_trace(
            go.Bar(
                x=table["time_s"],
                y=table[name],
                width=0.85 * _spacing(table["time_s"]),
                name=name,
                marker_color=color,
                customdata=times,
                hovertemplate=f"{name}: %{{y}} at %{{customdata}}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=table["time_s"],
            y=table[FACES],
            name=FACES,
            mode="lines+markers",
            line={"color": css_rgb(FACE_COLOR), "width": 2, "shape": "hv", "dash": "dot"},
            marker={"size": 6},
            customdata=times,
            hovertemplate="faces: %{y} at %{customdata}<extra></extra>",
        )
    )
    _time_axis(fig, duration_s)
    if table.empty:
        empty_chart(fig, "No frames analysed yet")
    objects = table.drop(columns=["time_s", FACES]).sum(axis=1) if len(table.columns) > 2 else table[FACES] * 0
    top = int(max(objects.max() if len(objects) else 0, table[FACES].max() if len(table) else 0, 1))
    return _layout(fig, title, 360, "in the frame", top)


def counts_figure(crossings: Sequence[Crossing], ids: dict[str, int], duration_s: float) -> go.Figure:
    """Running totals of the counting line's crossings, one line per class and direction (``ids``: each
    label's class id, for its colour)."""
    table = counts_over_time(crossings)
    fig = go.Figure()
    for series, rows in table.groupby("series", sort=False):
        label, direction = str(series).rsplit(" ", 1)
        color = css_rgb(class_color(ids[label])) if label in ids else OTHER_COLOR
        fig.add_trace(
            go.Scatter(
                x=[0.0, *rows["time_s"], duration_s],
                y=[0, *rows["total"], rows["total"].iloc[-1]],
                name=str(series),
                mode="lines",
                line={"color": color, "width": 2, "shape": "hv", "dash": DASHES[direction]},
                hovertemplate=f"{series}: %{{y}} by %{{x:.1f}} s<extra></extra>",
            )
        )
    _time_axis(fig, duration_s)
    if table.empty:
        empty_chart(fig, "Nothing crossed the line")
    top = int(table["total"].max()) if len(table) else 1
    return _layout(fig, "Crossings of the line over time", 320, "crossings so far", top)
