"""History → Map: every stored photo as a point placed by its embedding, linked both ways with the gallery.

A lasso or box selection (or a click) on the map narrows the gallery below to exactly those photos, so
every gallery action (open, compare, export, delete) works on them; the History filters dim what they
exclude; the photo last opened is ringed on the map, and its detail view shows where it lies. Once a map
exists, the gallery sorts and filters by uniqueness on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import plotly.graph_objects as go
import streamlit as st

from picmetric_core.errors import PicMetricError
from picmetric_core.history import MAX_PAGE_SIZE, HistoryQuery, HistorySort
from picmetric_core.map.view import MapView
from picmetric_ui import history_data, plain, resources, thumbnails
from picmetric_ui.map_chart import COLOUR_BY, map_figure

SHOW = "show_map"
OPENED = "_map_opened"  # the md5 last opened in the detail view, ringed on the map
ROUND = "_map_round"  # part of the chart's key: a new round clears its selection
MAX_SELECTED = 30_000  # SQLite takes at most 32,766 values in one statement
TTL_S = 30
SORT = "sort"
UNIQUENESS = "uniqueness"
UNIQUENESS_DEFAULTS = {SORT: "newest", UNIQUENESS: (0.0, 1.0)}
"""The gallery's uniqueness widgets (their session keys) and what they start at: every photo, newest first."""
SORT_NAMES: dict[HistorySort, str] = {
    "newest": "Newest first",
    "most_unique": "Most unique first",
    "least_unique": "Least unique first",
}


@dataclass(frozen=True)
class UniquenessChoice:
    """The gallery's order and uniqueness bounds (``None``: unbounded, so photos not on the map stay)."""

    sort: HistorySort = "newest"
    min_uniqueness: float | None = None
    max_uniqueness: float | None = None


# A resource, not data: cache_data would pickle 100,000 points on every rerun. The view is frozen, so shared.
@st.cache_resource(ttl=TTL_S, show_spinner=False, max_entries=8)
def _view(settings_key: str, query: HistoryQuery) -> MapView:
    return resources.service().map_view(query)


@st.cache_resource(ttl=TTL_S, show_spinner=False, max_entries=8)
def _figure(settings_key: str, query: HistoryQuery, colour_by: str, marked: str | None) -> go.Figure:
    """The map's figure, built once per filters, colouring and ringed photo (reruns such as a lasso's reuse it)."""
    view = _view(settings_key, query)
    return map_figure(view.points, view.matching, colour_by, view.fit.clusters if view.fit else (), marked=marked)


def map_view(query: HistoryQuery) -> MapView:
    """The map for these filters (paging and order ignored), cached like the gallery's reads."""
    return _view(resources.settings_key(resources.settings()), _filters_only(query))


def _filters_only(query: HistoryQuery) -> HistoryQuery:
    return replace(query, limit=MAX_PAGE_SIZE, page=1, cursor=None, with_total=False, sort="newest")


def uniqueness_ui() -> UniquenessChoice:
    """A "Sort" select and a uniqueness range beside the filters, once a map exists (none: newest first)."""
    if not resources.service().has_map():
        return UniquenessChoice()
    sort_col, range_col = st.columns([3, 4])  # under the dates and the file name
    sort = sort_col.selectbox(
        "Sort",
        list(SORT_NAMES),
        format_func=SORT_NAMES.__getitem__,
        key=SORT,
        help="By uniqueness on the map: most unique first finds outliers, least unique first finds near copies. "
        "Photos not on the map come last.",
    )
    low, high = range_col.slider(
        "Uniqueness",
        0.0,
        1.0,
        step=0.01,
        key=UNIQUENESS,
        help="How unlike its 5 nearest photos a photo is: 0 has copies around it, 1 nothing alike. "
        "A narrower range leaves out the photos not on the map.",
    )
    return UniquenessChoice(sort, low if low > 0 else None, high if high < 1 else None)


def uniqueness_notes(md5s: Sequence[str]) -> dict[str, str]:
    """What a gallery card says of its photo's uniqueness, by md5 (one query for the page)."""
    found = resources.service().uniqueness_of(md5s)
    return {md5: f"uniqueness {found[md5]:.2f}" if md5 in found else "not on the map" for md5 in md5s}


def map_section(query: HistoryQuery) -> HistoryQuery:
    """The map (when switched on) above the gallery; returns ``query`` narrowed to the photos selected on it."""
    if not st.toggle("Map", key=SHOW, help="Every stored photo placed by what it shows; lasso some to list them"):
        return query
    view = map_view(query)
    if view.classifier is None:
        st.info(
            "No photo has an embedding yet, so the map is empty. Photos analysed before similar photos were "
            "indexed get one with `picmetric similar backfill`.",
            icon=":material/scatter_plot:",
        )
        return query
    colour_by = st.segmented_control("Colour by", COLOUR_BY, default="Cluster", key="map_colour") or "Cluster"
    settings_key = resources.settings_key(resources.settings())
    figure = _figure(settings_key, _filters_only(query), colour_by, st.session_state.get(OPENED))
    event = st.plotly_chart(
        figure,
        key=f"history-map-{st.session_state.get(ROUND, 0)}",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        config={"displaylogo": False, "scrollZoom": True},
    )
    selected = selected_md5s(event)
    map_caption(view)
    refit_button()
    if not selected:
        return query
    kept = [md5 for md5 in selected if md5 in view.matching][:MAX_SELECTED]
    left, right = st.columns([4, 1], vertical_alignment="center")
    outside = len(selected) - len(kept)
    left.caption(
        f"The gallery shows the {len(kept)} photo{'s' if len(kept) != 1 else ''} selected on the map"
        + (f" ({outside} outside the filters left out)" if outside else "")
    )
    right.button("Clear the selection", key="map-clear", on_click=_clear_selection, width="stretch")
    return replace(query, md5_in=tuple(kept))


def selected_md5s(event) -> list[str]:
    """The md5s of the points a selection event holds (each point carries its md5 first in customdata)."""
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else []
    if not points and hasattr(event, "selection"):
        points = event.selection.get("points", [])
    found: dict[str, None] = {}
    for point in points:
        custom = point.get("customdata")
        if custom:
            found[custom[0] if isinstance(custom, list | tuple) else custom] = None
    return list(found)


def map_caption(view: MapView) -> None:
    """How the map was made, and why photos are missing from it."""
    fit = view.fit
    parts = []
    if fit is not None:
        method = "UMAP" if fit.method == "umap" else "PCA (too few photos for UMAP)"
        parts.append(
            f"{len(view.points)} photos · {len(fit.clusters)} clusters · {method} of the {fit.classifier} embeddings"
        )
        if fit.finished_at is not None:
            parts.append(f"fitted {fit.finished_at:%d %b %Y %H:%M} UTC")
    if view.unplaced:
        parts.append(f"{view.unplaced} new photos are placed as the map is opened again, or by a refit")
    if view.without_embedding:
        parts.append(
            f"{view.without_embedding} photo{'s' if view.without_embedding != 1 else ''} not on the map: analysed "
            "before similar photos were indexed (`picmetric similar backfill` adds them)"
        )
    plain.line(" · ".join(parts), muted=True)
    if fit is not None and fit.clusters:
        names = ", ".join(c.name for c in fit.clusters[:12])
        plain.line(f"Clusters: {names}" + (" …" if len(fit.clusters) > 12 else ""), muted=True)


def refit_button() -> None:
    """Refits the map here (for large histories, `picmetric map fit` shows its progress in a terminal)."""
    if not st.button("Refit the map", icon=":material/refresh:", key="map-refit"):
        return
    bar = st.progress(0.0, text="Fitting the map")

    def progress(stage: str, done: int, total: int) -> None:
        weight = {"neighbours": (0.0, 0.4), "layout": (0.4, 0.5), "points": (0.9, 0.1)}[stage]
        bar.progress(min(1.0, weight[0] + weight[1] * done / max(total, 1)), text=f"Fitting the map: {stage}")

    try:
        resources.service().fit_map(on_progress=progress)
    except PicMetricError as error:
        st.error(str(error), icon=":material/error:")
        return
    clear()
    _clear_selection()
    st.rerun()


def on_the_map(md5: str) -> None:
    """In the detail view: where this photo lies on the map, ringed, and its cluster and uniqueness."""
    st.session_state[OPENED] = md5
    with st.expander("On the map", icon=":material/scatter_plot:"):
        view = map_view(HistoryQuery())
        point = next((p for p in view.points if p.md5 == md5), None)
        if point is None:
            plain.line("Not on the map: it has no embedding yet (`picmetric similar backfill` adds one).", muted=True)
            return
        clusters = view.fit.clusters if view.fit else ()
        name = next((c.name for c in clusters if c.cluster == point.cluster), "in no cluster")
        plain.line(f"Cluster {name} · uniqueness {point.uniqueness:.2f}", muted=True)
        st.plotly_chart(
            map_figure(view.points, view.matching, "Cluster", clusters, marked=md5, height=360),
            key="detail-map",
            config={"displaylogo": False},
        )


def clear() -> None:
    """Forget the cached maps (after a refit or a delete)."""
    _view.clear()
    _figure.clear()
    history_data.clear()
    thumbnails.clear()


def _clear_selection() -> None:
    st.session_state[ROUND] = st.session_state.get(ROUND, 0) + 1
