"""The Live page's widgets: the controls, the camera stream, the readout and the snapshot.

The stream goes through ``streamlit-webrtc``; its frames are analysed by
:class:`~picmetric_core.live.processor.LiveProcessor` on the server's shared networks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import streamlit as st
from streamlit_webrtc import WebRtcMode, WebRtcStreamerContext, webrtc_streamer

from picmetric_core.config import Settings
from picmetric_core.filters import SLIDER_RANGES, DisplayThresholds
from picmetric_core.labels import percent
from picmetric_core.live.processor import INPUT_SIDES, LiveControls, LiveNetworks, LiveProcessor
from picmetric_core.models.coco import COCO_CATEGORIES
from picmetric_core.overlays import encode_jpeg
from picmetric_ui import intake, plain
from picmetric_ui.intake import Item

STREAM_KEY = "live"
SNAPSHOT = "_live_snapshot"
SNAPSHOT_NAME = "live camera {:%Y-%m-%d %H-%M-%S}.jpg"
"""Snapshots are stored with the live camera as their source, named like this (History's name filter finds them)."""
VIDEO = {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 30}}


def rtc_configuration(settings: Settings) -> dict[str, Any]:
    """The ICE servers from ``PICMETRIC_ICE_SERVERS``; none by default.

    An explicit empty list: given nothing, streamlit-webrtc would fill in a public STUN server on both
    sides (and an offline machine would wait on it for ~40 s).
    """
    return {"iceServers": [dict(server) for server in settings.ice_servers]}


def live_controls_ui() -> LiveControls:
    """Classes to show, the detection and face thresholds, and the side frames are analysed at."""
    names = [category.name for category in COCO_CATEGORIES]
    classes = st.multiselect("Classes to show", names, key="live_classes", placeholder="All classes")
    detection, faces = SLIDER_RANGES["min_detection_score"], SLIDER_RANGES["min_face_score"]
    detection_threshold = st.slider(
        "Object confidence", detection.low, detection.high, detection.default, detection.step, key="live_conf"
    )
    show_faces = st.toggle("Faces", value=True, key="live_faces")
    face_threshold = st.slider(
        "Face confidence",
        faces.low,
        faces.high,
        faces.default,
        faces.step,
        key="live_faceconf",
        disabled=not show_faces,
    )
    input_side = st.select_slider(
        "Input size (px)",
        INPUT_SIDES,
        value=416,
        key="live_side",
        help="Frames are shrunk to this longest side before the networks see them: smaller is faster.",
    )
    return LiveControls(
        classes=frozenset(classes) or None,
        detection_threshold=detection_threshold,
        face_threshold=face_threshold,
        input_side=int(input_side),
        faces=show_faces,
    )


def camera_stream(networks: LiveNetworks, controls: LiveControls, settings: Settings) -> WebRtcStreamerContext:
    """The browser's camera in, the analysed frames back; ``controls`` reach a running stream at once."""
    context = webrtc_streamer(
        key=STREAM_KEY,
        mode=WebRtcMode.SENDRECV,
        rtc_configuration=rtc_configuration(settings),
        media_stream_constraints={"video": VIDEO, "audio": False},
        video_processor_factory=lambda: LiveProcessor(networks, controls),
        async_processing=False,  # the processor keeps its own worker: recv() only hands a frame over
        video_html_attrs={"style": {"width": "100%"}, "controls": False, "autoPlay": True, "muted": True},
    )
    if context.video_processor is not None:
        context.video_processor.update(controls)
    return context


@st.fragment(run_every=1.0)
def live_readout(context: WebRtcStreamerContext) -> None:
    """Frames processed and dropped, speed, latency and the classifier's caption, refreshed every second."""
    processor: LiveProcessor | None = context.video_processor
    if processor is None or not context.state.playing:
        st.caption("Press START and allow the camera. Frames go to this server only.")
        return
    if processor.error is not None:
        st.error("The stream stopped: a network failed. Press STOP, then START.", icon=":material/error:")
    stats = processor.stats()
    plain.line(
        f"Processed {stats.processed} frames · {stats.dropped} dropped · {stats.fps:.1f} fps · "
        f"latency p50 {stats.latency_p50_ms:.0f} ms, p95 {stats.latency_p95_ms:.0f} ms",
        muted=True,
    )
    caption = processor.caption()
    if caption:
        plain.line("Looks like: " + ", ".join(f"{c.label.replace('_', ' ')} {percent(c.score)}" for c in caption[:3]))


def snapshot_button(context: WebRtcStreamerContext) -> None:
    """Store the current frame as a full analysis (three networks, store, database, History)."""
    if not st.button("Snapshot", icon=":material/photo_camera:", key="live_snapshot_button"):
        return
    processor: LiveProcessor | None = context.video_processor
    frame = processor.snapshot() if processor is not None else None
    if frame is None:
        st.warning("Start the camera first: Snapshot stores the frame it shows.", icon=":material/videocam_off:")
    else:
        name = SNAPSHOT_NAME.format(datetime.now(UTC))
        with st.spinner("Analysing the snapshot"):
            st.session_state[SNAPSHOT] = intake.analyze_upload(name, encode_jpeg(frame, quality=92), source="live")


def stored_snapshot() -> Item | None:
    """The last snapshot's analysis in this session (or ``None``)."""
    return st.session_state.get(SNAPSHOT)


def snapshot_thresholds(controls: LiveControls) -> DisplayThresholds:
    """The result view's thresholds: the ones the live view was showing."""
    return DisplayThresholds(
        min_detection_score=controls.detection_threshold,
        nms_iou=controls.nms_iou,
        min_face_score=controls.face_threshold,
    )
