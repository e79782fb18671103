"""PicMetric — Live: the browser's camera, with the objects and faces the networks see drawn on each frame.

The detector and the face network run on the newest frame (frames that arrive meanwhile are dropped,
never queued); the classifier's top classes show below the video about twice a second. Snapshot stores
the current frame as a full analysis, with the live camera as its source, named "live camera …" (History
finds it by that name).
"""

from __future__ import annotations

import streamlit as st

from picmetric_ui import components, live, plain, resources
from picmetric_ui.page import page_setup
from picmetric_ui.result import result_view

page_setup("Live")
LOAD_WAIT_S = 600

st.title("Live")
st.markdown("Point the camera at the room: **objects** and **faces** are found and drawn as the video runs.")

loader = resources.warmup()
if not loader.done.is_set():
    with st.spinner("Loading the networks (once per server)"):
        loader.done.wait(LOAD_WAIT_S)
if not loader.ready:
    st.error("The networks could not be loaded, so the live view is off. The log says why.", icon=":material/error:")
    st.stop()
analyzer = loader.analyzer()

video_column, controls_column = st.columns([3, 2], gap="medium")
with controls_column, st.container(border=True):
    controls = live.live_controls_ui()
with video_column:
    stream = live.camera_stream(analyzer, controls, resources.settings())
    live.live_readout(stream)
    live.snapshot_button(stream)

snapshot = live.stored_snapshot()
if snapshot is not None:
    st.subheader("Snapshot")
    plain.line(
        f'Stored as {snapshot.name}, from the live camera (History\'s file name filter finds "live camera")', muted=True
    )
    if snapshot.error is not None:
        st.error(snapshot.error, icon=":material/error:")
    else:
        if snapshot.submission.seen_before:
            components.seen_before_note(snapshot.submission)
        components.near_duplicate_note(snapshot.submission)
        result_view(snapshot.submission, snapshot.rgb, live.snapshot_thresholds(controls), key="live-snapshot")
