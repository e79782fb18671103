"""The History map's colours and legend: data in, typed results out, no widgets.

Each point gets the index of its legend entry (the browser draws them; see ``picmetric_ui/map_component``):
the most frequent groups under the chosen colouring are named, the rest share "other", and points the
History filters exclude get ``OUTSIDE`` (drawn faint grey).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from picmetric_core.map.records import Cluster, MapPoint, MapPoints

COLOUR_BY = ("Cluster", "Top class", "Object", "Faces", "Batch", "Date")
MAX_GROUPS = 10  # named colours; the rest share "other"
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4f46e5", "#65a30d")
OTHER = "#94a3b8"
OUTSIDE = 0xFFFF  # the group of a point the History filters exclude
MARKER_PX = ((5_000, 7), (20_000, 5), (50_000, 4))  # up to this many points, this size; more: 3 px


@dataclass(frozen=True)
class LegendEntry:
    """One colour of the map: what it stands for (as the legend says it), its colour, how many points."""

    name: str
    colour: str
    count: int


@dataclass(frozen=True)
class Colouring:
    """Every point's legend entry, in the points' order.

    Attributes:
        groups: One uint16 per point: its index in ``legend``, or ``OUTSIDE`` (excluded by the filters).
        legend: The colours, the most frequent first ("other" last); under "Date" oldest to newest.
        outside: How many points the filters exclude.
        gradient: The legend is a scale (dates), not separate kinds.
    """

    groups: np.ndarray
    legend: tuple[LegendEntry, ...]
    outside: int
    gradient: bool


def colouring(
    points: Sequence[MapPoint], matching: frozenset[str], colour_by: str, clusters: Sequence[Cluster]
) -> Colouring:
    """The colours of ``points`` under ``colour_by``; those not in ``matching`` are ``OUTSIDE``.

    Counted per distinct value of the column ``colour_by`` reads (a cluster, a label, a day…), not per point.

    >>> from datetime import datetime
    >>> dot = lambda md5, label: MapPoint(md5, 0, 0, 0, 0.5, None, datetime(2026, 1, 1), label, (), False, None, "")
    >>> photos = [dot("a", "dog"), dot("b", "cat"), dot("c", "dog"), dot("d", "cat")]
    >>> found = colouring(photos, frozenset("abc"), "Top class", ())
    >>> found.groups.tolist(), [(e.name, e.count) for e in found.legend], found.outside
    ([0, 1, 0, 65535], [('dog (2)', 2), ('cat (1)', 1)], 1)
    """
    columns = MapPoints.of(points)
    values, name_of = _grouped_by(columns, colour_by, clusters)
    inside = np.fromiter((md5 in matching for md5 in columns.md5), bool, len(columns))
    distinct, which, how_many = np.unique(values[inside], return_inverse=True, return_counts=True)
    names = [name_of(int(value)) for value in distinct]
    counts: Counter[str] = Counter()
    for name, count in zip(names, how_many.tolist(), strict=True):
        counts[name] += count
    if colour_by == "Date":
        named = sorted(counts)
    else:
        named = sorted(counts, key=lambda g: (_is_none(g), -counts[g], g))[:MAX_GROUPS]
    legend = [_entry(colour_by, name, i, len(named), counts[name]) for i, name in enumerate(named)]
    index = {name: i for i, name in enumerate(named)}
    others = sum(count for name, count in counts.items() if name not in index)
    if others:
        legend.append(LegendEntry(f"other ({others})", OTHER, others))
    entry_of = np.array([index.get(name, len(named)) for name in names], np.uint16)
    groups = np.full(len(columns), OUTSIDE, np.uint16)
    groups[inside] = entry_of[which.reshape(-1)]
    return Colouring(groups, tuple(legend), int(len(columns) - inside.sum()), colour_by == "Date")


def _grouped_by(
    columns: MapPoints, colour_by: str, clusters: Sequence[Cluster]
) -> tuple[np.ndarray, Callable[[int], str]]:
    """The column a colouring groups by (integers), and what the legend calls a value of it."""
    labels = columns.labels
    if colour_by == "Cluster":
        names = {c.cluster: c.name for c in clusters}
        return columns.cluster, lambda v: names.get(v, "in no cluster")
    if colour_by == "Top class":
        return columns.top_class, lambda v: labels[v] if v >= 0 else "no class"
    if colour_by == "Object":
        return columns.first_object, lambda v: labels[v] if v >= 0 else "no object"
    if colour_by == "Faces":
        return columns.has_faces.astype(np.int8), lambda v: "with faces" if v else "without faces"
    if colour_by == "Batch":
        return columns.batch, lambda v: f"batch {v}" if v >= 0 else "no batch"
    if colour_by == "Date":
        return columns.days, lambda v: str(np.datetime64(v, "D"))
    raise ValueError(f"cannot colour by {colour_by!r}: choose one of {COLOUR_BY}")


def marker_px(points: int) -> int:
    """The points' size in pixels for a map of this many points (100,000 points of 7 px are one blob).

    >>> marker_px(300), marker_px(100_000)
    (7, 3)
    """
    return next((px for most, px in MARKER_PX if points <= most), 3)


def _entry(colour_by: str, name: str, i: int, named: int, count: int) -> LegendEntry:
    colour = _date_colour(i, named) if colour_by == "Date" else PALETTE[i % len(PALETTE)]
    if _is_none(name):
        colour = OTHER
    label = name if colour_by == "Cluster" and "·" in name else f"{name} ({count})"
    return LegendEntry(label, colour, count)


def _is_none(group: str) -> bool:
    """The group of points that have none of the kind ("no class", "in no cluster"): grey, listed last."""
    return group.startswith(("in no", "no "))


def _date_colour(i: int, count: int) -> str:
    """Oldest blue to newest orange."""
    t = i / max(count - 1, 1)
    return f"rgb({int(37 + t * (234 - 37))},{int(99 + t * (88 - 99))},{int(235 + t * (12 - 235))})"
