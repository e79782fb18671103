"""Widgets both pages draw: the threshold sliders, the Models panel and one image's result view."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from picmetric_core.filters import (
    DEFAULT_THRESHOLDS,
    RAW_DETECTION_SCORE,
    RAW_NMS_IOU,
    DisplayThresholds,
    shown,
)
from picmetric_core.intake.images import SUPPORTED_FORMATS, decode_for, format_size
from picmetric_core.overlays import Overlays, render_overlays
from picmetric_core.pipeline import get_analyzer
from picmetric_core.results import LANDMARK_NAMES, Analysis
from picmetric_core.service import Submission
from picmetric_core.views import full_view, legacy_view
from picmetric_ui import charts, resources

ROLE_TITLES = {"classifier": "Classifier", "detector": "Detector", "faces": "Faces"}
_OVERLAY_CACHE = "_overlay_cache"
_OVERLAY_CACHE_SIZE = 64
_DECODED_CACHE = "_decoded_cache"


def limits_text() -> str:
    current = resources.settings()
    return (
        f"Formats: {SUPPORTED_FORMATS}. Up to {format_size(current.max_image_bytes)} and "
        f"{current.max_image_pixels / 1e6:,.0f} megapixels per image."
    )


def page_links() -> None:
    """The sidebar's page menu, with names a person reads (not the file names Streamlit would show)."""
    st.page_link("streamlit_app.py", label="Analyze", icon=":material/image_search:")
    st.page_link("pages/1_History.py", label="History", icon=":material/photo_library:")
    st.divider()


def thresholds_ui() -> DisplayThresholds:
    """Sliders that re-filter shown results; the networks are never run again for them."""
    st.subheader("Display thresholds")
    min_score = st.slider(
        "Detection confidence",
        RAW_DETECTION_SCORE,
        1.0,
        DEFAULT_THRESHOLDS.min_detection_score,
        0.05,
        key="min_detection_score",
        help="Objects below this confidence are hidden.",
    )
    nms_iou = st.slider(
        "NMS overlap (IoU)",
        0.1,
        RAW_NMS_IOU,
        DEFAULT_THRESHOLDS.nms_iou,
        0.05,
        key="nms_iou",
        help="Boxes of one class overlapping more than this are merged into the best one.",
    )
    face_score = st.slider(
        "Face confidence",
        0.0,
        1.0,
        DEFAULT_THRESHOLDS.min_face_score,
        0.01,
        key="min_face_score",
        help="Faces below this confidence are hidden.",
    )
    return DisplayThresholds(min_detection_score=min_score, nms_iou=nms_iou, min_face_score=face_score)


def model_panel() -> None:
    """The sidebar's Models panel; refreshes itself every second while the models are loading."""
    warmup = resources.warmup()
    run_every = None if warmup.done.is_set() else 1.0
    st.fragment(run_every=run_every)(_model_panel_body)()


def _model_panel_body() -> None:
    warmup = resources.warmup()
    st.subheader("Models")
    if not warmup.done.is_set():
        st.info("Loading models… the page is usable meanwhile; the first analysis waits for them.", icon="⏳")
        return
    if warmup.error:
        st.error(f"The models could not be loaded: {warmup.error}")
        return
    analyzer = get_analyzer(resources.settings())
    runtime = analyzer.runtime()
    for info in analyzer.models:
        kind = "full weights" if info.full else "offline stand-in"
        seconds = runtime.load_seconds.get(info.role)
        loaded = f" · loaded in {seconds:.2f} s" if seconds is not None else ""
        st.markdown(f"**{ROLE_TITLES.get(info.role, info.role)}:** {info.name}  \n{kind}{loaded}")
    st.caption(f"Backend **{runtime.backend}** on **{runtime.device}** · warmed up in {warmup.seconds} s")
    with st.expander("Weights"):
        for info in analyzer.models:
            st.markdown(f"**{info.name}** — `{Path(info.weights).name}`")
            if info.note:
                st.caption(info.note)


def overlays_for(rgb: np.ndarray, analysis: Analysis, thresholds: DisplayThresholds) -> Overlays:
    """Both overlays at ``thresholds``, redrawn from the pixels (kept per session, never re-analysed)."""
    cache: dict[tuple[str, DisplayThresholds], Overlays] = st.session_state.setdefault(_OVERLAY_CACHE, {})
    key = (analysis.md5, thresholds)
    if key not in cache:
        if len(cache) >= _OVERLAY_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = render_overlays(rgb, analysis, thresholds)
    return cache[key]


def stored_rgb(submission: Submission) -> np.ndarray:
    """The original's pixels, read back from the store and decoded once per session."""
    cache: dict[str, np.ndarray] = st.session_state.setdefault(_DECODED_CACHE, {})
    md5 = submission.record.md5
    if md5 not in cache:
        data = resources.service().store.get(submission.record.keys.original)
        cache[md5] = decode_for(resources.settings(), data).rgb
    return cache[md5]


def seen_before_note(submission: Submission) -> None:
    created = submission.record.created_at
    st.info(f"Seen before — analysed on {created:%d %b %Y at %H:%M} UTC. Showing the stored result.", icon="🕘")


def result_view(submission: Submission, rgb: np.ndarray, thresholds: DisplayThresholds, key: str) -> None:
    """One image: original and both overlays, charts, tables and downloads, at ``thresholds``."""
    analysis = submission.analysis
    visible = shown(analysis, thresholds)
    overlays = overlays_for(rgb, analysis, thresholds)
    names = {m.role: m.name for m in analysis.models}

    original, objects, faces = st.columns(3)
    original.image(rgb, caption=f"Original · {analysis.width}×{analysis.height}", width="stretch")
    objects.image(
        overlays.detections_png,
        caption=f"{names.get('detector', 'Detector')} · {len(visible.detections)} objects",
        width="stretch",
    )
    faces.image(
        overlays.faces_png,
        caption=f"{names.get('faces', 'Faces')} · {len(visible.faces)} faces",
        width="stretch",
    )

    left, middle, right = st.columns(3)
    left.plotly_chart(
        charts.classifier_chart(analysis.classifications, names.get("classifier", "classifier")),
        width="stretch",
        key=f"{key}-classes",
    )
    middle.plotly_chart(
        charts.detections_chart(visible.detections, names.get("detector", "detector")),
        width="stretch",
        key=f"{key}-objects",
    )
    right.plotly_chart(
        charts.faces_chart(visible.faces, names.get("faces", "faces")), width="stretch", key=f"{key}-faces"
    )

    left, right = st.columns(2)
    with left:
        st.markdown("**Objects**")
        st.dataframe(detections_table(visible), hide_index=True, width="stretch")
    with right:
        st.markdown("**Faces**")
        st.dataframe(faces_table(visible), hide_index=True, width="stretch")

    timings = analysis.timings_ms
    if timings:
        st.caption(" · ".join(f"{name} {ms:.0f} ms" for name, ms in timings.items()))
    downloads(submission, overlays, thresholds, key)


def detections_table(visible: Analysis) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"label": d.label, "score": round(d.score, 3), **{k: round(v) for k, v in asdict(d.box).items()}}
            for d in visible.detections
        ],
        columns=["label", "score", "x1", "y1", "x2", "y2"],
    )


def faces_table(visible: Analysis) -> pd.DataFrame:
    rows = []
    for index, face in enumerate(visible.faces, start=1):
        row: dict[str, Any] = {"face": index, "score": round(face.score, 4)}
        row["box"] = ", ".join(f"{v:.0f}" for v in face.box.as_list())
        for name in LANDMARK_NAMES:
            point = face.landmarks[name]
            row[name] = f"{point.x:.0f}, {point.y:.0f}"
        rows.append(row)
    return pd.DataFrame(rows, columns=["face", "score", "box", *LANDMARK_NAMES])


def full_json(submission: Submission, thresholds: DisplayThresholds) -> str:
    view = full_view(
        submission.analysis, thresholds=thresholds, urls=asdict(submission.urls), record=asdict(submission.record)
    )
    return json.dumps(view, indent=2, default=_plain)


def legacy_json(submission: Submission, thresholds: DisplayThresholds) -> str:
    keys, urls = submission.record.keys, submission.urls
    view = legacy_view(
        submission.analysis,
        original_url=urls.original or keys.original,
        detections_url=urls.detections or keys.detections,
        faces_url=urls.faces or keys.faces,
        thresholds=thresholds,
    )
    return json.dumps(view, indent=2)


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def downloads(submission: Submission, overlays: Overlays, thresholds: DisplayThresholds, key: str) -> None:
    stem = Path(submission.record.filename or submission.record.md5).stem
    files = [
        ("Full JSON", full_json(submission, thresholds), f"{stem}.picmetric.json", "application/json", "full"),
        ("Old API JSON", legacy_json(submission, thresholds), f"{stem}.legacy.json", "application/json", "legacy"),
        ("Objects overlay (PNG)", overlays.detections_png, f"{stem}.objects.png", "image/png", "objects-png"),
        ("Faces overlay (PNG)", overlays.faces_png, f"{stem}.faces.png", "image/png", "faces-png"),
    ]
    for column, (label, data, file_name, mime, suffix) in zip(st.columns(len(files)), files, strict=True):
        column.download_button(
            label, data, file_name, mime, key=f"{key}-{suffix}", on_click="ignore", width="stretch"
        )
