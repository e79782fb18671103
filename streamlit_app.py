"""PicMetric — the Analyze page: drop photos or paste URLs, see what the three networks found."""

from __future__ import annotations

import streamlit as st

from picmetric_ui import components, intake, resources
from picmetric_ui.intake import Item

st.set_page_config(page_title="PicMetric · Analyze", page_icon="🔍", layout="wide")

resources.warmup()  # starts loading the networks in the background, once per server

with st.sidebar:
    components.page_links()
    thresholds = components.thresholds_ui()
    components.model_panel()

st.title("PicMetric")
st.markdown("Drop photos or paste links to see what **ImageNet classes**, **COCO objects** and **faces** they hold.")

uploads_column, urls_column = st.columns([3, 2])
with uploads_column:
    files = st.file_uploader(
        "Images", accept_multiple_files=True, key="uploads", help="Drag and drop one or many images."
    )
    st.caption(components.limits_text())
with urls_column:
    url_text = st.text_area(
        "Image URLs, one per line", key="url_text", height=110, placeholder="https://example.com/photo.jpg"
    )
    analyze_urls = st.button("Analyze URLs", type="primary")

done: dict[str, Item] = st.session_state.setdefault("upload_items", {})
new_files = [f for f in files or [] if f.file_id not in done]
new_urls = intake.parse_urls(url_text) if analyze_urls else []


def run_batch() -> None:
    """Analyse the new uploads and URLs one by one, with progress; failures stay on their own item."""
    total = len(new_files) + len(new_urls)
    progress = st.progress(0.0, text=f"Analysing {total} image{'s' if total != 1 else ''}…")
    with st.status(f"Analysing {total} image{'s' if total != 1 else ''}…", expanded=True) as status:
        url_items: list[Item] = []
        for index, upload in enumerate(new_files):
            progress.progress(index / total, text=f"{index + 1} of {total}: {upload.name}")
            done[upload.file_id] = intake.analyze_upload(upload.name, upload.getvalue(), status.write)
        for index, url in enumerate(new_urls, start=len(new_files)):
            progress.progress(index / total, text=f"{index + 1} of {total}: {url}")
            url_items.append(intake.analyze_url(url, status.write))
        if new_urls:
            st.session_state["url_items"] = url_items
        status.update(label=f"Analysed {total} image{'s' if total != 1 else ''}", state="complete", expanded=False)
    progress.empty()


if new_files or new_urls:
    run_batch()

current_ids = {f.file_id for f in files or []}
for file_id in [k for k in done if k not in current_ids]:  # files removed from the uploader
    del done[file_id]
batch = [done[f.file_id] for f in files or []] + st.session_state.get("url_items", [])

if not batch:
    st.info("Results appear here. Every analysis is kept: see **History** in the sidebar.", icon="🖼️")

for index, item in enumerate(batch):
    st.divider()
    st.subheader(item.name)
    if item.error is not None:
        st.error(item.error, icon="⚠️")
        continue
    if item.submission.seen_before:
        components.seen_before_note(item.submission)
    components.result_view(item.submission, item.rgb, thresholds, key=f"item{index}")
