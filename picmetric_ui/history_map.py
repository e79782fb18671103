"""History → Map: every stored photo as a point placed by its embedding, linked both ways with the gallery.

A lasso or box selection (or a click) on the map narrows the gallery below to exactly those photos, so
every gallery action (open, compare, export, delete) works on them; the History filters dim what they
exclude; the photo last opened is ringed on the map, and its detail view shows where it lies. Once a map
exists, the gallery sorts and filters by uniqueness on it.

The map is drawn in a fragment, so what only the map needs (a point's thumbnail for its tooltip, another
colouring) reruns the map alone; a new selection reruns the whole page, for the gallery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import streamlit as st

from picmetric_core.errors import PicMetricError
from picmetric_core.history import MAX_PAGE_SIZE, HistoryQuery, HistorySort
from picmetric_core.map.view import MapView
from picmetric_core.store.objects import ObjectNotFound
from picmetric_ui import history_data, map_views, plain, resources, thumbnails
from picmetric_ui.map_chart import COLOUR_BY
from picmetric_ui.map_component import HoverThumb, hovered_of, photo_map, selection_of, served

log = logging.getLogger(__name__)

SHOW = "show_map"
SHOW_KEPT = "show_map_kept"  # outlives the switch while the detail view is open
OPENED = "_map_opened"  # the md5 last opened in the detail view, ringed on the map
ROUND = "_map_round"  # a new round clears the selection (one made in an earlier round is ignored)
LISTED = "_map_listed"  # the md5s the gallery was last drawn for (the map's fragment reruns the page when they change)
MAP_KEY = "history-map"
DETAIL_MAP_KEY = "detail-map"
MAX_SELECTED = 30_000  # SQLite takes at most 32,766 values in one statement
MAP_PX = 560
DETAIL_MAP_PX = 360
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


def drawn_map(query: HistoryQuery) -> map_views.DrawnPoints:
    """The map for these filters (paging and order ignored), as served; kept until what it shows changes."""
    return map_views.drawn_points(_filters_only(query))


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
    if SHOW not in st.session_state:  # Streamlit drops a widget's state while the detail view hides it
        st.session_state[SHOW] = st.session_state.get(SHOW_KEPT, False)
    shown = st.toggle("Map", key=SHOW, help="Every stored photo placed by what it shows; lasso some to list them")
    st.session_state[SHOW_KEPT] = shown
    if not shown:
        return query
    drawn = drawn_map(query)
    if drawn.view.classifier is None:
        st.info(
            "No photo has an embedding yet, so the map is empty. Photos analysed before similar photos were "
            "indexed get one with `picmetric similar backfill`.",
            icon=":material/scatter_plot:",
        )
        return query
    selected = map_views.selected_md5s(
        selection_of(st.session_state.get(MAP_KEY)), drawn, st.session_state.get(ROUND, 0)
    )
    st.session_state[LISTED] = tuple(selected)
    gallery_map(query)
    map_caption(drawn.view)
    refit_button()
    if not selected:
        return query
    matching = drawn.view.matching
    kept = [md5 for md5 in selected if md5 in matching][:MAX_SELECTED]
    left, right = st.columns([4, 1], vertical_alignment="center")
    outside = len(selected) - len(kept)
    left.caption(
        f"The gallery shows the {len(kept)} photo{'s' if len(kept) != 1 else ''} selected on the map"
        + (f" ({outside} outside the filters left out)" if outside else "")
    )
    right.button("Clear the selection", key="map-clear", on_click=_clear_selection, width="stretch")
    return replace(query, md5_in=tuple(kept))


@st.fragment
def gallery_map(query: HistoryQuery) -> None:
    """The map over the gallery, with its colouring; a new selection on it reruns the page (the gallery lists it)."""
    drawn = drawn_map(query)
    selection_round = st.session_state.get(ROUND, 0)
    value = st.session_state.get(MAP_KEY)
    if tuple(map_views.selected_md5s(selection_of(value), drawn, selection_round)) != st.session_state.get(LISTED):
        st.rerun(scope="app")
    colour_by = st.segmented_control("Colour by", COLOUR_BY, default="Cluster", key="map_colour") or "Cluster"
    photo_map(
        drawn.files(colour_by),
        key=MAP_KEY,
        height=MAP_PX,
        marked=drawn.index.get(st.session_state.get(OPENED)),
        selection_round=selection_round,
        thumb=hovered_thumbnail(value, drawn),
    )


@st.fragment
def detail_map(index: int) -> None:
    """The map in the detail view, this photo ringed (hovering a point shows its thumbnail, rerunning the map alone)."""
    drawn = drawn_map(HistoryQuery())
    thumb = hovered_thumbnail(st.session_state.get(DETAIL_MAP_KEY), drawn)
    photo_map(
        drawn.files("Cluster"), key=DETAIL_MAP_KEY, height=DETAIL_MAP_PX, marked=index, selectable=False, thumb=thumb
    )


def hovered_thumbnail(value: object, drawn: map_views.DrawnPoints) -> HoverThumb | None:
    """The thumbnail of the point the map's value asks for, served (``None``: it asks for none, or for a point of
    another points file)."""
    hovered = hovered_of(value)
    if hovered is None or hovered[0] != drawn.file or hovered[1] >= len(drawn.view.points):
        return None
    jpeg = stored_thumbnail(drawn.view.points[hovered[1]].thumbnail_key)
    return HoverThumb(drawn.file, hovered[1], served.publish_jpeg(jpeg, "thumb") if jpeg else None)


@st.cache_data(ttl=600, max_entries=256, show_spinner=False)
def _stored_thumbnail(settings_key: str, key: str) -> bytes:
    return resources.service().read_object(key)


def stored_thumbnail(key: str) -> bytes | None:
    """The photo's stored thumbnail (a JPEG of at most 320 px a side); ``None`` when it has none or it cannot be
    read (logged: a tooltip without its thumbnail must not take the map down)."""
    if not key:
        return None
    try:
        return _stored_thumbnail(resources.settings_key(resources.settings()), key)
    except ObjectNotFound:
        return None
    except Exception:
        log.exception("thumbnail %s could not be read for the map", key)
        return None


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
        drawn = drawn_map(HistoryQuery())
        view = drawn.view
        index = drawn.index.get(md5)
        if index is None:
            plain.line("Not on the map: it has no embedding yet (`picmetric similar backfill` adds one).", muted=True)
            return
        point = view.points[index]
        clusters = view.fit.clusters if view.fit else ()
        name = next((c.name for c in clusters if c.cluster == point.cluster), "in no cluster")
        plain.line(f"Cluster {name} · uniqueness {point.uniqueness:.2f}", muted=True)
        detail_map(index)


def clear() -> None:
    """Forget the cached maps (after a refit or a delete)."""
    map_views.clear()
    history_data.clear()
    thumbnails.clear()
    _stored_thumbnail.clear()


def _clear_selection() -> None:
    st.session_state[ROUND] = st.session_state.get(ROUND, 0) + 1
