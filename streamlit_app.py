"""PicMetric — the Analyze page: photos in (uploads, URLs, camera, samples); what three networks found, out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from picmetric_ui import components, intake, plain, resources, samples
from picmetric_ui.intake import Item
from picmetric_ui.page import page_setup
from picmetric_ui.result import result_view
from picmetric_ui.upload_limit import widget_limit_mb


@dataclass(frozen=True)
class Job:
    """One image to analyse: where it comes from and what the page calls it."""

    key: str
    kind: Literal["upload", "url"]
    name: str
    payload: bytes | str  # an upload's bytes or a URL


page_setup("Analyze")
with st.sidebar:
    components.preload_charts()

st.title("PicMetric")
st.markdown(
    "Drop photos, paste links, take a picture or try a sample to see what **ImageNet classes**, "
    "**COCO objects** and **faces** they hold."
)

done: dict[str, Item] = st.session_state.setdefault("items", {})
extra_jobs: list[Job] = st.session_state.setdefault("extra_jobs", [])  # URLs, samples and camera shots


def add_jobs(jobs: list[Job], replace_kind: str | None = None) -> None:
    """Queue jobs after the uploads (a new set of URLs replaces the last one)."""
    kept = [job for job in extra_jobs if replace_kind is None or not job.key.startswith(replace_kind)]
    known = {job.key for job in kept}
    extra_jobs[:] = kept + [job for job in jobs if job.key not in known]
    for job in jobs:
        done.pop(job.key, None)


uploads_column, urls_column = st.columns([3, 2])
with uploads_column:
    files = st.file_uploader(
        "Images",
        accept_multiple_files=True,
        key="uploads",
        help="Drag and drop one or many images.",
        max_upload_size=widget_limit_mb(resources.settings()),
    )
    st.caption(components.limits_text())
with urls_column:
    url_text = st.text_area(
        "Image URLs, one per line", key="url_text", height=110, placeholder="https://example.com/photo.jpg"
    )
    if st.button("Analyze URLs", type="primary", icon=":material/link:"):
        add_jobs([Job(f"url:{url}", "url", url, url) for url in intake.parse_urls(url_text)], replace_kind="url:")

st.markdown("**Or try a sample photo**")
# One row that shares its width between the samples: ~170 px each on a laptop, ~110 px on a phone, where
# st.columns would stack them one under another (and a horizontal container's 128 px basis would wrap).
st.html("<style>.st-key-samples > [data-testid='stLayoutWrapper'] { flex: 1 1 0 !important; }</style>")
with st.container(width=540), st.container(horizontal=True, gap="small", key="samples"):
    for sample in samples.SAMPLES:
        with st.container(gap="xsmall"):
            st.image(samples.sample_thumbnail(sample.name), width="stretch")
            if st.button(sample.caption, key=f"sample-{sample.name}", icon=":material/play_arrow:", width="stretch"):
                add_jobs([Job(f"sample:{sample.name}", "upload", sample.name, samples.sample_png(sample.name))])
            st.caption(sample.licence)

if st.toggle("Use the camera", key="camera_on", help="Take a picture with this device's camera and analyse it."):
    shot = st.camera_input("Take a picture", key="camera")
    if shot is not None and f"camera:{shot.file_id}" not in done:
        add_jobs([Job(f"camera:{shot.file_id}", "upload", "camera.jpg", shot.getvalue())], replace_kind="camera:")

upload_jobs = [Job(f"upload:{f.file_id}", "upload", f.name, f) for f in files or []]
jobs = upload_jobs + extra_jobs
for key in [k for k in done if k.startswith("upload:") and k not in {j.key for j in upload_jobs}]:
    del done[key]  # files removed from the uploader

if not jobs:
    st.info("Results appear here. Every analysis is kept: see **History** in the sidebar.", icon=":material/photo:")
    st.stop()

heading, settings = st.columns([3, 1], vertical_alignment="bottom")
with heading:
    st.subheader("Results")
with settings:
    thresholds = components.thresholds_panel()


def analyse(job: Job, line: DeltaGenerator) -> Item:
    """Run one job, showing its progress on one line that each stage overwrites."""

    def report(text: str) -> None:
        plain.line(text, muted=True, into=line)

    if job.kind == "url":
        return intake.analyze_url(str(job.payload), report)
    data = job.payload if isinstance(job.payload, bytes) else job.payload.getvalue()
    return intake.analyze_upload(job.name, data, report)


for index, job in enumerate(jobs):
    with st.container(border=True, key=f"result-{index}"):
        plain.heading(job.name)
        if job.key not in done:
            line = st.empty()
            done[job.key] = analyse(job, line)
            line.empty()
        item = done[job.key]
        if item.error is not None:
            st.error(item.error, icon=":material/error:")
            continue
        if item.submission.seen_before:
            components.seen_before_note(item.submission)
        components.near_duplicate_note(item.submission)
        result_view(item.submission, item.rgb, thresholds, key=f"item{index}")
