"""PicMetric — Video: a clip in (upload or URL), objects followed and faces found frame by frame, counts
across a line, an annotated clip and a timeline out.

Links: ``?video=<id>`` opens a stored clip's result.
"""

from __future__ import annotations

import streamlit as st

from picmetric_ui import plain, video
from picmetric_ui.page import page_setup
from picmetric_ui.video_data import info_text
from picmetric_ui.video_delete import delete_button, deleted_notice
from picmetric_ui.video_line import counting_line_ui

page_setup("Video")

st.title("Video")
st.markdown(
    "Drop a clip or paste a link to see which **objects** and **faces** it shows and when, and how many "
    "cross a **counting line**."
)

if video_id := video.opened_video():
    stored = video.stored_video(video_id)
    with st.container(horizontal=True):
        st.button("Analyse another clip", icon=":material/arrow_back:", on_click=video.close_result)
        if stored is not None:
            delete_button(stored)
    if stored is None:
        st.warning("No stored video with this id.", icon=":material/search_off:")
    else:
        video.result_view(stored)
    st.stop()

deleted_notice()

clip = video.clip_intake_ui()

if job_id := video.running_job():
    video.job_progress(job_id)
elif clip is None:
    st.info("Results appear here. Every analysed clip is kept: see **History**.", icon=":material/movie:")
else:
    probed = video.probed(clip)
    if probed.error is not None:
        st.error(probed.error, icon=":material/error:")
    else:
        plain.line(f"{clip.name} · {info_text(probed.info)}", bold=True)
        frame_column, settings_column = st.columns([3, 2], gap="medium")
        with frame_column:
            line = counting_line_ui(probed.poster, clip.key)
        with settings_column:
            sample_fps = video.sample_rate_ui(probed.info)
            if st.button("Analyse", type="primary", icon=":material/play_arrow:", key="video_analyse", width="stretch"):
                video.start_analysis(clip, line, sample_fps)

video.recent_videos()
