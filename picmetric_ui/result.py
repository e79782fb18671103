"""One image's result as both pages show it: a one-line summary, pictures and charts, details, downloads.

Compact when little is found: a network that found nothing adds no picture and no chart, only its
part of the summary line.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from picmetric_core.filters import DisplayThresholds, shown
from picmetric_core.intake.images import decode_for
from picmetric_core.labels import percent
from picmetric_core.overlays import LANDMARK_LEGEND, draw_overlays, encode_jpeg, encode_png
from picmetric_core.results import LANDMARK_NAMES, Analysis
from picmetric_core.submission import Submission
from picmetric_core.views import legacy_submission_document, submission_document, to_json
from picmetric_ui import charts, resources

COLUMNS = 3
CHART_CONFIG = {"displayModeBar": False}  # the mode bar would sit over the charts' titles
LANDMARK_WORDS = {
    "left_eye": "Left eye",
    "right_eye": "Right eye",
    "nose": "Nose",
    "mouth_left": "Mouth (left)",
    "mouth_right": "Mouth (right)",
}
_OVERLAY_CACHE = "_overlay_cache"
_OVERLAY_CACHE_SIZE = 64
_DECODED_CACHE = "_decoded_cache"

Panel = Callable[[], None]


@dataclass(frozen=True)
class OverlayPictures:
    """Both overlays as JPEGs for the page (the PNGs are made only for a download)."""

    detections_jpeg: bytes
    faces_jpeg: bytes


def summary_text(analysis: Analysis, visible: Analysis) -> str:
    """One line: the top class, the objects by kind and the faces, e.g. "golden retriever 88% · 2 dogs · 1 face"."""
    parts = []
    if analysis.classifications:
        top = analysis.classifications[0]
        parts.append(f"{top.label} {percent(top.score)}")
    kinds = Counter(d.label for d in visible.detections)
    parts.append(", ".join(f"{n} {label}" for label, n in kinds.most_common()) or "no objects")
    faces = len(visible.faces)
    parts.append(f"{faces} face{'s' if faces != 1 else ''}" if faces else "no faces")
    return " · ".join(parts)


def overlays_for(rgb: np.ndarray, analysis: Analysis, thresholds: DisplayThresholds) -> OverlayPictures:
    """Both overlays at ``thresholds``, redrawn from the pixels (kept per session, never re-analysed)."""
    cache: dict[tuple[str, DisplayThresholds], OverlayPictures] = st.session_state.setdefault(_OVERLAY_CACHE, {})
    key = (analysis.md5, thresholds)
    if key not in cache:
        if len(cache) >= _OVERLAY_CACHE_SIZE:
            cache.pop(next(iter(cache)))
        drawn = draw_overlays(rgb, analysis, thresholds)
        cache[key] = OverlayPictures(encode_jpeg(drawn.detections), encode_jpeg(drawn.faces))
    return cache[key]


def stored_rgb(submission: Submission) -> np.ndarray:
    """The original's pixels, read back from the store and decoded once per session."""
    cache: dict[str, np.ndarray] = st.session_state.setdefault(_DECODED_CACHE, {})
    md5 = submission.record.md5
    if md5 not in cache:
        data = resources.service().read_object(submission.record.keys.original)
        cache[md5] = decode_for(resources.settings(), data).rgb
    return cache[md5]


def landmark_legend() -> None:
    """Which colour marks which landmark on the faces overlay."""
    dots = " ".join(
        f'<span style="white-space:nowrap;margin-right:0.8rem"><span style="color:rgb{color};font-size:1.1rem">'
        f"&#9679;</span> {html.escape(name)}</span>"
        for name, color in LANDMARK_LEGEND.items()
    )
    st.html(f'<p style="margin:0;font-size:0.9rem">{dots}</p>')


def result_view(submission: Submission, rgb: np.ndarray, thresholds: DisplayThresholds, key: str) -> None:
    """One image at ``thresholds``: summary line, pictures and charts, then details and downloads."""
    analysis = submission.analysis
    visible = shown(analysis, thresholds)
    overlays = overlays_for(rgb, analysis, thresholds)
    names = {m.role: m.name for m in analysis.models}
    st.markdown(f":material/insights: {summary_text(analysis, visible)}")

    def picture(data: np.ndarray | bytes, caption: str, legend: bool = False) -> Panel:
        def draw() -> None:
            st.image(data, caption=caption, width="stretch")
            if legend:
                landmark_legend()

        return draw

    def chart(figure, suffix: str) -> Panel:
        return lambda: st.plotly_chart(figure, width="stretch", key=f"{key}-{suffix}", config=CHART_CONFIG)

    detections, faces = len(visible.detections), len(visible.faces)
    panels = [picture(rgb, f"Original · {analysis.width}×{analysis.height}")]
    if detections:
        caption = f"{names.get('detector', 'Detector')} · {detections} object{'s' if detections != 1 else ''}"
        panels.append(picture(overlays.detections_jpeg, caption))
    if faces:
        caption = f"{names.get('faces', 'Faces')} · {faces} face{'s' if faces != 1 else ''}"
        panels.append(picture(overlays.faces_jpeg, caption, legend=True))
    panels.append(
        chart(charts.classifier_chart(analysis.classifications, names.get("classifier", "classifier")), "classes")
    )
    if detections:
        panels.append(chart(charts.detections_chart(visible.detections, names.get("detector", "detector")), "objects"))
    if faces:
        panels.append(chart(charts.faces_chart(visible.faces, names.get("faces", "faces")), "faces"))
    for start in range(0, len(panels), COLUMNS):
        for column, draw in zip(st.columns(COLUMNS), panels[start : start + COLUMNS], strict=False):
            with column:
                draw()

    # What the expanders hold is built only while one is open: most viewers never open them, and
    # the interactive figure (the photo inside plotly) is the slowest thing on the page to draw.
    if detections or faces:
        interactive = st.expander(
            "Interactive view: hover a box, click the legend to hide a class",
            icon=":material/touch_app:",
            key=f"{key}-interactive-open",
            on_change="rerun",
        )
        if interactive.open:
            interactive.plotly_chart(
                charts.interactive_view(rgb, visible), width="stretch", key=f"{key}-interactive", config=CHART_CONFIG
            )
        tables = st.expander(
            "Tables of boxes and landmarks", icon=":material/table:", key=f"{key}-tables-open", on_change="rerun"
        )
        if tables.open:
            if detections:
                tables.dataframe(detections_table(visible), hide_index=True, width="stretch")
            if faces:
                tables.dataframe(faces_table(visible), hide_index=True, width="stretch")
    files = st.expander(
        "Downloads and timings", icon=":material/download:", key=f"{key}-downloads-open", on_change="rerun"
    )
    if files.open:
        with files:
            downloads(submission, rgb, thresholds, key)
            if timings := analysis.timings_ms:
                st.caption(" · ".join(f"{name} {ms:.0f} ms" for name, ms in timings.items()))


def detections_table(visible: Analysis) -> pd.DataFrame:
    """One row per shown object, most confident first, with headers in words."""
    rows = [
        {
            "Object": d.label,
            "Confidence": percent(d.score),
            "Left": round(d.box.x1),
            "Top": round(d.box.y1),
            "Right": round(d.box.x2),
            "Bottom": round(d.box.y2),
        }
        for d in sorted(visible.detections, key=lambda d: -d.score)
    ]
    return pd.DataFrame(rows, columns=["Object", "Confidence", "Left", "Top", "Right", "Bottom"])


def faces_table(visible: Analysis) -> pd.DataFrame:
    """One row per shown face, numbered as on the overlay, with each landmark as "x, y"."""
    rows = []
    for index, face in enumerate(visible.faces, start=1):
        row: dict[str, Any] = {"Face": index, "Confidence": percent(face.score)}
        row["Box (left, top, right, bottom)"] = ", ".join(f"{v:.0f}" for v in face.box.as_list())
        for name in LANDMARK_NAMES:
            point = face.landmarks[name]
            row[LANDMARK_WORDS[name]] = f"{point.x:.0f}, {point.y:.0f}"
        rows.append(row)
    columns = ["Face", "Confidence", "Box (left, top, right, bottom)", *(LANDMARK_WORDS[n] for n in LANDMARK_NAMES)]
    return pd.DataFrame(rows, columns=columns)


def full_json(submission: Submission, thresholds: DisplayThresholds) -> str:
    """The API's v1 body for this analysis (the same document, the store's own links)."""
    return to_json(submission_document(_linkable(submission), thresholds=thresholds), indent=2)


def legacy_json(submission: Submission, thresholds: DisplayThresholds) -> str:
    """The old API's response for this analysis, at the thresholds on screen."""
    return to_json(legacy_submission_document(_linkable(submission), thresholds=thresholds), indent=2)


def _linkable(submission: Submission) -> Submission:
    """``submission`` with its overlays in the store when the documents link to them (S3): overlays are
    drawn when first asked for, and a download is such an ask."""
    return resources.service().with_overlays_stored(submission)


def downloads(submission: Submission, rgb: np.ndarray, thresholds: DisplayThresholds, key: str) -> None:
    """The documents and PNG overlays, each made when its button is clicked."""
    stem = Path(submission.record.filename or submission.record.md5).stem
    analysis = submission.analysis

    def overlay_png(which: str) -> Callable[[], bytes]:
        return lambda: encode_png(getattr(draw_overlays(rgb, analysis, thresholds), which))

    json_type = "application/json"
    files = [
        ("Full JSON", lambda: full_json(submission, thresholds), f"{stem}.picmetric.json", json_type, "full"),
        ("Old API JSON", lambda: legacy_json(submission, thresholds), f"{stem}.legacy.json", json_type, "legacy"),
        ("Objects overlay (PNG)", overlay_png("detections"), f"{stem}.objects.png", "image/png", "objects-png"),
        ("Faces overlay (PNG)", overlay_png("faces"), f"{stem}.faces.png", "image/png", "faces-png"),
    ]
    left, right = st.columns(2)
    for index, (label, data, file_name, mime, suffix) in enumerate(files):
        (left if index % 2 == 0 else right).download_button(
            label,
            data,
            file_name,
            mime,
            key=f"{key}-{suffix}",
            on_click="ignore",
            width="stretch",
            icon=":material/download:",
        )
