"""The History map as a Streamlit component that keeps the points in the browser.

A static page and script (``frontend/``, no build step) speak Streamlit's component protocol directly and
draw the points on a 2-D canvas, with lasso, box and click selection, hover, zoom and pan. The points and
their colours travel as files (``served``), fetched once per content; a rerun sends only their names and
the legend, and the component redraws nothing when they are the same. A selection comes back as indices
into the points file.

A point the pointer rests on (or a tap) comes back too, as ``hover`` in the value (with the selection, which
every value carries): the page serves that photo's thumbnail and passes its name back as ``thumb``, which the
component shows in the point's tooltip and remembers for the points file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from streamlit.components.v1 import declare_component

from picmetric_ui.map_chart import LegendEntry
from picmetric_ui.map_component.served import ServedFolder

LEGEND_PX = 64  # about what the legend below the canvas takes (the page sizes the frame before it draws)

served = ServedFolder()
_component = declare_component("picmetric_map", path=str(served.root))


@dataclass(frozen=True)
class MapFiles:
    """What one drawing of the map shows: the points file, their colours' file and the legend."""

    points: str
    groups: str
    count: int
    legend: tuple[LegendEntry, ...]
    outside: int
    gradient: bool
    marker_px: int


@dataclass(frozen=True)
class HoverThumb:
    """The thumbnail of the point at ``index`` of ``points`` (a points file's name): a served file's name, or
    ``None`` when the photo has none."""

    points: str
    index: int
    name: str | None


@dataclass(frozen=True)
class MapSelection:
    """Points selected on the map: indices into ``points`` (a points file's name), made in ``selection_round``."""

    points: str
    indices: tuple[int, ...]
    selection_round: int


def photo_map(
    files: MapFiles,
    *,
    key: str,
    height: int,
    marked: int | None = None,
    selection_round: int = 0,
    selectable: bool = True,
    thumb: HoverThumb | None = None,
) -> MapSelection | None:
    """Draws the map; returns the last selection made on it (``None``: none yet).

    ``marked`` (an index into the points) is ringed; a new ``selection_round`` clears the selection drawn;
    ``thumb`` is shown in its point's tooltip (what the value's ``hover`` asked for).
    """
    value = _component(
        key=key,
        default=None,
        points=files.points,
        groups=files.groups,
        count=files.count,
        legend=[asdict(entry) for entry in files.legend],
        outside=files.outside,
        gradient=files.gradient,
        marker_px=files.marker_px,
        canvas_height=height,
        height=height + LEGEND_PX,
        marked=-1 if marked is None else marked,
        round=selection_round,
        selectable=selectable,
        thumb=None if thumb is None else asdict(thumb),
    )
    return selection_of(value)


def selection_of(value: object) -> MapSelection | None:
    """The component's value as a selection (``None`` for anything else)."""
    if not isinstance(value, dict) or not isinstance(value.get("points"), str):
        return None
    indices = value.get("indices")
    if not isinstance(indices, Sequence) or not all(isinstance(i, int) for i in indices):
        return None
    return MapSelection(value["points"], tuple(indices), int(value.get("round", 0)))


def hovered_of(value: object) -> tuple[str, int] | None:
    """The points file and index of the point the value asks a thumbnail for (``None``: none)."""
    if not isinstance(value, dict) or not isinstance(value.get("points"), str):
        return None
    index = value.get("hover")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None
    return value["points"], index
