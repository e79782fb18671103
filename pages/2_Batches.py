"""PicMetric — Batches: analyse a whole folder or S3 prefix on Ray, follow it live, open its results in History."""

from __future__ import annotations

import logging

import streamlit as st

from picmetric_core.batch.jobs import BatchJob
from picmetric_core.batch.sources import item_filename
from picmetric_core.errors import PicMetricError
from picmetric_ui import plain, resources
from picmetric_ui.page import page_setup

page_setup("Batches")
REFRESH_S = 2.0


def start_form() -> None:
    allowed = resources.settings().batch_allowed_sources
    if not allowed:
        st.info("Batch jobs are not enabled here: no folders or buckets are allowed for them.")
        return
    st.caption("Allowed: " + ", ".join(f"`{place}`" for place in allowed))
    with st.form("start"):
        source = st.text_input("Folder or s3://bucket/prefix", key="source", placeholder=allowed[0])
        limit = st.number_input("At most this many images (0: all)", min_value=0, value=0, step=100, key="limit")
        if st.form_submit_button("Start", type="primary") and source.strip():
            started = resources.launcher().start([source], int(limit) or None)
            st.session_state["job"] = started.job.id
            st.toast(f"{'Resumed' if started.resumed else 'Started'} job {started.job.id}")


def job_panel(job: BatchJob) -> None:
    st.subheader(f"Job {job.id} · {job.status}")
    plain.line(" · ".join(job.sources), muted=True)
    st.progress(job.done / job.total if job.total else 1.0, text=f"{job.done} of {job.total} images")
    new, seen, failed, speed = st.columns(4)
    new.metric(
        "New",
        job.new,
        help=f"Near-duplicates of photos stored before: {job.near_duplicates}" if job.near_duplicates else None,
    )
    seen.metric("Seen before", job.seen)
    failed.metric("Failed", job.failed)
    speed.metric("Images/s", f"{job.images_per_s:.1f}" if job.images_per_s else "—")
    if job.status == "interrupted":
        st.warning(job.error, icon=":material/pause_circle:")
        if st.button("Finish this job", key=f"finish-{job.id}", icon=":material/play_arrow:", type="primary"):
            resources.launcher().start(list(job.sources))
            st.toast(f"Resumed job {job.id}")
    elif job.error:
        st.error(job.error, icon=":material/error:")
    failures = resources.launcher().jobs.failures(job.id)
    if failures:
        st.dataframe(
            [{"item": item_filename(f.item), "error": f.error} for f in failures], key="failures", hide_index=True
        )
    st.page_link(
        "pages/1_History.py",
        label="Open in History",
        query_params={"batch": str(job.id)},
        icon=":material/photo_library:",
    )


@st.fragment(run_every=REFRESH_S)
def live_job() -> None:
    job_id = st.session_state.get("job")
    job = resources.launcher().get(job_id) if job_id else None
    if job is not None:
        job_panel(job)


def recent_jobs() -> None:
    jobs = resources.launcher().jobs.recent(20)
    if not jobs:
        st.caption("No batch jobs yet.")
        return
    for job in jobs:
        label = f"Job {job.id} · {job.status} · {job.done}/{job.total} · new {job.new}, failed {job.failed}"
        if st.button(label, key=f"job-{job.id}"):
            st.session_state["job"] = job.id
            st.rerun()


st.title("Batches")
try:
    start_form()
    live_job()
    with st.expander("Recent jobs", expanded=True):
        recent_jobs()
except PicMetricError as error:
    st.error(str(error), icon=":material/error:")
except Exception:
    logging.getLogger("picmetric_ui.batches").exception("the Batches page failed")
    st.error("Something went wrong with batch jobs; it was logged. Try again.", icon=":material/error:")
