"""Widgets every page draws: the page menu, the threshold sliders, the Models panel, notes on limits."""

from __future__ import annotations

import contextlib
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from picmetric_core.errors import without_paths
from picmetric_core.filters import SLIDER_RANGES, DisplayThresholds
from picmetric_core.intake.images import SUPPORTED_FORMATS, format_size
from picmetric_core.submission import Submission
from picmetric_ui import plain, resources
from picmetric_ui.upload_limit import effective_max_bytes

ROLE_TITLES = {"classifier": "Classifier", "detector": "Detector", "faces": "Faces"}
_OVERLAY_CACHE = "_overlay_cache"
_OVERLAY_CACHE_SIZE = 64
_DECODED_CACHE = "_decoded_cache"


def limits_text() -> str:
    current = resources.settings()
    return (
        f"Formats: {SUPPORTED_FORMATS}. Up to {format_size(effective_max_bytes(current))} and "
        f"{current.max_image_pixels / 1e6:,.0f} megapixels per image."
    )


def page_links() -> None:
    """The sidebar's page menu, with names a person reads (not the file names Streamlit would show)."""
    st.page_link("streamlit_app.py", label="Analyze", icon=":material/image_search:")
    st.page_link("pages/1_History.py", label="History", icon=":material/photo_library:")
    st.page_link("pages/2_Batches.py", label="Batches", icon=":material/dynamic_feed:")
    st.page_link("pages/3_Live.py", label="Live", icon=":material/videocam:")
    st.page_link("pages/4_Video.py", label="Video", icon=":material/movie:")
    st.divider()


# Shared links carry the thresholds they were viewed at: ``?md5=…&conf=0.5&iou=0.45&faceconf=0.9``.
THRESHOLD_PARAMS = {"min_detection_score": "conf", "nms_iou": "iou", "min_face_score": "faceconf"}


def thresholds_panel() -> DisplayThresholds:
    """The threshold sliders in a popover placed next to the results (reachable on a phone too)."""
    with st.popover("Thresholds", icon=":material/tune:"):
        return thresholds_ui()


def threshold_params(thresholds: DisplayThresholds) -> dict[str, str]:
    """The query parameters that make a shared link open at ``thresholds``."""
    return {param: f"{getattr(thresholds, name):g}" for name, param in THRESHOLD_PARAMS.items()}


def _seed(key: str) -> None:
    """A slider starts at its value from the page's link, else at the default (once per session)."""
    if key in st.session_state:
        return
    bounds = SLIDER_RANGES[key]
    value = bounds.default
    with contextlib.suppress(ValueError):  # a hand-edited link; the default applies
        value = float(st.query_params.get(THRESHOLD_PARAMS[key], value))
    st.session_state[key] = min(max(value, bounds.low), bounds.high)


SLIDER_TEXT = {
    "min_detection_score": ("Detection confidence", "Objects below this confidence are hidden."),
    "nms_iou": ("NMS overlap (IoU)", "Boxes of one class overlapping more than this are merged into the best one."),
    "min_face_score": ("Face confidence", "Faces below this confidence are hidden (it starts at the stored cut-off)."),
}


def thresholds_ui() -> DisplayThresholds:
    """Sliders that re-filter shown results; the networks are never run again for them.

    Their ranges come from :data:`~picmetric_core.filters.SLIDER_RANGES`: none goes below what is stored.
    """
    values = {}
    for key, (label, hint) in SLIDER_TEXT.items():
        _seed(key)
        bounds = SLIDER_RANGES[key]
        values[key] = st.slider(label, bounds.low, bounds.high, step=bounds.step, key=key, help=hint)
    return DisplayThresholds(**values)


def model_panel() -> None:
    """The sidebar's Models panel; refreshes itself every second while the models are loading."""
    warmup = resources.warmup()
    run_every = None if warmup.done.is_set() else 1.0
    st.fragment(run_every=run_every)(_model_panel_body)()


def _model_panel_body() -> None:
    warmup = resources.warmup()
    st.subheader("Models")
    if not warmup.done.is_set():
        st.info(
            "Loading models… the page is usable meanwhile; the first analysis waits for them.",
            icon=":material/hourglass_top:",
        )
        return
    if warmup.error:
        st.error(f"The models could not be loaded: {without_paths(warmup.error)}")
        return
    analyzer = warmup.analyzer()  # the networks the warm-up loaded, never a second load
    runtime = analyzer.runtime()
    for info in analyzer.models:
        kind = "full weights" if info.full else "offline stand-in"
        seconds = runtime.load_seconds.get(info.role)
        loaded = f" · loaded in {seconds:.2f} s" if seconds is not None else ""
        ran = f"  \nruns on {info.runtime}" if info.runtime else ""
        st.markdown(f"**{ROLE_TITLES.get(info.role, info.role)}:** {info.name}  \n{kind}{loaded}{ran}")
    st.caption(f"Backend **{runtime.backend}** on **{runtime.device}** · warmed up in {warmup.seconds} s")
    with st.expander("Weights"):
        for info in analyzer.models:
            st.markdown(f"**{info.name}** — `{Path(info.weights).name}`")
            if info.note:
                st.caption(without_paths(info.note))


def seen_before_note(submission: Submission) -> None:
    created = submission.record.created_at
    st.info(
        f"Seen before — analysed on {created:%d %b %Y at %H:%M} UTC. Showing the stored result.",
        icon=":material/history:",
    )


def near_duplicate_note(submission: Submission) -> None:
    """Names the stored photos this one is the same picture as (resized, re-encoded, lightly cropped)."""
    if not submission.near_duplicates:
        return
    service = resources.service()
    for duplicate in submission.near_duplicates[:3]:
        earlier = service.get(duplicate.md5)
        if earlier is None:
            continue
        record = earlier.record
        text, link = st.columns([5, 1], vertical_alignment="center")
        plain.line(
            f"Near-duplicate of {record.filename or record.md5} analysed on {record.created_at:%d %b %Y}",
            into=text,
        )
        link.page_link(
            "pages/1_History.py", label="Open", query_params={"md5": record.md5}, icon=":material/open_in_new:"
        )


def preload_charts() -> None:
    """An invisible empty chart, so the browser has loaded and compiled plotly (~4 MB of JavaScript)
    while the viewer picks a photo, not after the first result arrives. Call it in the sidebar on every
    run: in the main column, a result's container would take over its place and show it for a moment."""
    st.html("<style>.st-key-chart-preload { display: none; }</style>")
    with st.container(key="chart-preload"):
        st.plotly_chart(go.Figure(), key="chart-preload-figure", config={"displayModeBar": False})
