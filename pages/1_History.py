"""PicMetric — History: every analysis, searchable, with a shareable detail view (``?md5=…``)."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, time, timedelta

import streamlit as st

from picmetric_core.errors import PicMetricError
from picmetric_core.filters import shown
from picmetric_core.service import Submission
from picmetric_core.store.history import HistoryQuery
from picmetric_ui import charts, components, resources

st.set_page_config(page_title="PicMetric · History", page_icon="🗂️", layout="wide")

PAGE_SIZE = 12
GRID_COLUMNS = 4
_MD5_START = re.compile(r"[0-9a-fA-F]{6,32}")

resources.warmup()

with st.sidebar:
    components.page_links()
    thresholds = components.thresholds_ui()
    components.model_panel()


def detail_view(md5: str) -> None:
    """One stored analysis, drawn with the Analyze page's components."""
    if st.button("← Back to the gallery"):
        st.query_params.clear()
        st.rerun()
    submission = resources.service().get(md5)
    if submission is None:
        st.warning(f"No analysis with md5 {md5}.")
        return
    record = submission.record
    st.title(record.filename or record.md5)
    origin = record.source_url or "upload"
    st.caption(
        f"Analysed {record.created_at:%d %b %Y at %H:%M} UTC · from {origin} · {record.width}×{record.height} · "
        f"{record.content_type} · md5 `{record.md5}`"
    )
    components.result_view(submission, components.stored_rgb(submission), thresholds, key="detail")


def filters_ui() -> HistoryQuery:
    """The gallery's filters, read top to bottom as a query."""
    service = resources.service()
    suggestions = [c.label for c in service.label_frequencies("detector", limit=50)]
    suggestions += [c.label for c in service.label_frequencies("classifier", limit=50) if c.label not in suggestions]
    label_col, score_col, faces_col, dates_col, search_col = st.columns([3, 2, 2, 3, 3])
    label = label_col.selectbox(
        "Label",
        suggestions,
        index=None,
        key="label",
        placeholder="Any label",
        accept_new_options=True,
        help="An ImageNet class or a COCO object; the most frequent come first.",
    )
    min_score = score_col.slider(
        "Minimum confidence",
        0.0,
        1.0,
        0.25,
        0.05,
        key="min_score",
        disabled=not label,
        help="How sure the network must be that the image shows the label.",
    )
    faces = faces_col.selectbox("Faces", ["Any", "With faces", "Without faces"], key="faces")
    dates = dates_col.date_input("Analysed between", value=(), key="dates", format="YYYY-MM-DD")
    search = search_col.text_input("File name or md5", key="search", placeholder="dog.jpg or 4f055f…").strip()
    since = until = None
    if isinstance(dates, tuple | list) and len(dates) >= 1:
        since = datetime.combine(dates[0], time(), tzinfo=UTC)
        until = datetime.combine(dates[-1], time(), tzinfo=UTC) + timedelta(days=1)
    is_md5 = bool(_MD5_START.fullmatch(search))
    return HistoryQuery(
        label=label or None,
        min_score=min_score if label else 0.0,
        has_faces={"Any": None, "With faces": True, "Without faces": False}[faces],
        min_face_score=thresholds.min_face_score,
        since=since,
        until=until,
        filename=None if is_md5 or not search else search,
        md5=search.lower() if is_md5 else None,
        batch=int(batch) if (batch := st.query_params.get("batch", "")).isdigit() else None,
        limit=PAGE_SIZE,
        page=st.session_state.get("page", 1),
        with_total=True,
    )


def open_detail(md5: str) -> None:
    st.query_params["md5"] = md5


def thumbnail_card(submission: Submission) -> None:
    record, analysis = submission.record, submission.analysis
    try:
        st.image(resources.service().store.get(record.keys.thumbnail), width="stretch")
    except Exception:
        st.caption("(thumbnail unavailable)")
    top = analysis.classifications[0].label if analysis.classifications else "—"
    objects = sorted({d.label for d in shown(analysis, thresholds).detections})
    st.markdown(f"**{record.filename or record.md5[:12]}**")
    st.caption(f"{record.created_at:%d %b %Y %H:%M} · {top} · {', '.join(objects) or 'no objects'}")
    st.button("Open", key=f"open-{record.md5}", on_click=open_detail, args=(record.md5,), width="stretch")


def gallery(query: HistoryQuery) -> None:
    page = resources.service().history(query)
    total = page.total or 0
    if not page.items:
        st.info("No analyses match these filters." if total == 0 and query.page == 1 else "No more analyses.")
    for start in range(0, len(page.items), GRID_COLUMNS):
        for column, submission in zip(st.columns(GRID_COLUMNS), page.items[start : start + GRID_COLUMNS], strict=False):
            with column, st.container(border=True):
                thumbnail_card(submission)
    pages = max(1, -(-total // query.limit))
    previous, label, following = st.columns([1, 2, 1])
    if previous.button("← Newer", disabled=query.page <= 1, width="stretch"):
        st.session_state["page"] = query.page - 1
        st.rerun()
    label.caption(f"Page {query.page} of {pages} · {total} analyses", text_alignment="center")
    if following.button("Older →", disabled=not page.has_more, width="stretch"):
        st.session_state["page"] = query.page + 1
        st.rerun()


def summary() -> None:
    """Totals and charts for stakeholders."""
    service = resources.service()
    everything = service.history(HistoryQuery(min_score=0.0, limit=1, with_total=True)).total or 0
    with_faces = service.history(HistoryQuery(min_score=0.0, has_faces=True, limit=1, with_total=True)).total or 0
    objects = service.label_frequencies("detector", limit=15)
    classes = service.label_frequencies("classifier", limit=15)
    over_time = service.counts_over_time()
    a, b, c, d = st.columns(4)
    a.metric("Images analysed", everything)
    b.metric("With faces", with_faces)
    c.metric("Object kinds seen", len(objects))
    d.metric("Days active", len(over_time))
    left, middle, right = st.columns(3)
    left.plotly_chart(charts.label_frequency_chart(objects, "Objects found (COCO)"), key="summary-objects")
    middle.plotly_chart(charts.label_frequency_chart(classes, "Top classes (ImageNet)"), key="summary-classes")
    right.plotly_chart(charts.over_time_chart(over_time), key="summary-time")


def reset_page() -> None:
    st.session_state["page"] = 1


try:
    md5 = st.query_params.get("md5")
    if md5:
        detail_view(md5.strip().lower())
    else:
        st.title("History")
        query = filters_ui()
        filters = (query.label, query.min_score, query.has_faces, query.since, query.filename, query.md5)
        if st.session_state.get("_last_filters") != filters:
            st.session_state["_last_filters"] = filters
            if query.page != 1:
                reset_page()
                st.rerun()
        gallery(query)
        with st.expander("Summary", expanded=True):
            summary()
except PicMetricError as error:
    st.error(str(error), icon="⚠️")
except Exception:
    logging.getLogger("picmetric_ui.history").exception("the History page failed")
    st.error("Something went wrong while reading the history; it was logged. Try again.", icon="⚠️")
