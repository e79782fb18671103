"""The History map's figure: one WebGL scatter point per photo. Data in, figure out, no widgets.

Sized for 100,000 points: coordinates go as float32 arrays (sent base64-packed), each point carries only its
md5 (``customdata``, what a selection reads) and one hover string, the traces skip plotly's per-value
validation (seconds at that size; the values are ours, built right here), and points get smaller as they
get many (100,000 points of 7 px are one blob, and drawing them took 2.5 times as long).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from html import escape

import numpy as np
import plotly.graph_objects as go

from picmetric_core.map.records import Cluster, MapPoint

COLOUR_BY = ("Cluster", "Top class", "Object", "Faces", "Batch", "Date")
MAX_GROUPS = 10  # named colours; the rest share "other"
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4f46e5", "#65a30d")
OTHER = "#94a3b8"
MARK = "#f59e0b"
MARKER_PX = ((5_000, 7), (20_000, 5), (50_000, 4))  # up to this many points, this size; more: 3 px
HOVER = "%{hovertext}<extra></extra>"


def group_of(colour_by: str, clusters: Sequence[Cluster]) -> Callable[[MapPoint], str]:
    """What a point's colour stands for under ``colour_by``."""
    names = {c.cluster: c.name for c in clusters}
    return {
        "Cluster": lambda p: names.get(p.cluster, "in no cluster"),
        "Top class": lambda p: p.top_class or "no class",
        "Object": lambda p: p.objects[0] if p.objects else "no object",
        "Faces": lambda p: "with faces" if p.has_faces else "without faces",
        "Batch": lambda p: f"batch {p.batch}" if p.batch is not None else "no batch",
        "Date": lambda p: f"{p.created_at:%Y-%m-%d}",
    }[colour_by]


def map_figure(
    points: Sequence[MapPoint],
    matching: frozenset[str],
    colour_by: str,
    clusters: Sequence[Cluster],
    marked: str | None = None,
    height: int = 560,
) -> go.Figure:
    """Every point, coloured by ``colour_by`` (the most frequent groups named, the rest "other"); points the
    filters exclude drawn faint in grey; ``marked`` (an opened photo) ringed on top."""
    group = group_of(colour_by, clusters)
    kept = [p for p in points if p.md5 in matching]
    dimmed = [p for p in points if p.md5 not in matching]
    counts = Counter(group(p) for p in kept)
    ordered = sorted(counts, key=lambda g: (g.startswith(("in no", "no ")), -counts[g], g))
    if colour_by == "Date":
        ordered = sorted(counts)
    named = ordered[:MAX_GROUPS] if colour_by != "Date" else ordered
    size = marker_px(len(points))
    traces = []
    if dimmed:
        traces.append(_trace(dimmed, "outside the filters", "#cbd5e1", size, opacity=0.35))
    by_group: dict[str, list[MapPoint]] = {}
    for point in kept:
        name = group(point)
        by_group.setdefault(name if name in named else "other", []).append(point)
    for i, name in enumerate(named):
        colour = _date_colour(i, len(named)) if colour_by == "Date" else PALETTE[i % len(PALETTE)]
        if name.startswith(("in no", "no ")):
            colour = OTHER
        label = name if colour_by == "Cluster" and "·" in name else f"{name} ({counts[name]})"
        traces.append(_trace(by_group.get(name, []), label, colour, size))
    if "other" in by_group:
        traces.append(_trace(by_group["other"], f"other ({len(by_group['other'])})", OTHER, size))
    mark = next((p for p in points if p.md5 == marked), None)
    if mark is not None:
        ring = {"size": 22, "color": "rgba(0,0,0,0)", "line": {"width": 4, "color": MARK}, "symbol": "circle"}
        traces.append(_trace([mark], "opened", MARK, size, marker=ring))
    fig = go.Figure(data=traces, _validate=False)
    fig.update_layout(
        height=height,
        margin={"l": 0, "r": 0, "t": 10, "b": 0},
        dragmode="lasso",
        legend={"orientation": "h", "yanchor": "top", "y": -0.02, "xanchor": "left", "x": 0},
        hovermode="closest",
        uirevision="history-map",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def marker_px(points: int) -> int:
    """The points' size in pixels for a map of this many points.

    >>> marker_px(300), marker_px(100_000)
    (7, 3)
    """
    return next((px for most, px in MARKER_PX if points <= most), 3)


def hover_text(point: MapPoint) -> str:
    """What hovering a point says (plotly's hover shows no images): name, top class, objects, uniqueness."""
    name = escape(point.filename or point.md5[:12])
    found = escape(f"top class: {point.top_class or '—'} · {', '.join(point.objects[:4]) or 'no objects'}")
    faces = " · faces" if point.has_faces else ""
    return f"<b>{name}</b><br>{found}<br>uniqueness {point.uniqueness:.2f}{faces}"


def _trace(
    points: Sequence[MapPoint], name: str, colour: str, size: int, opacity: float = 0.85, marker: dict | None = None
) -> go.Scattergl:
    return go.Scattergl(
        x=np.fromiter((p.x for p in points), np.float32, len(points)),
        y=np.fromiter((p.y for p in points), np.float32, len(points)),
        mode="markers",
        name=name,
        marker=marker or {"size": size, "color": colour, "opacity": opacity},
        customdata=[p.md5 for p in points],
        hovertext=[hover_text(p) for p in points],
        hovertemplate=HOVER,
        _validate=False,
    )


def _date_colour(i: int, count: int) -> str:
    """Oldest blue to newest orange."""
    t = i / max(count - 1, 1)
    return f"rgb({int(37 + t * (234 - 37))},{int(99 + t * (88 - 99))},{int(235 + t * (12 - 235))})"
