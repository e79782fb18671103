"""Frames from dog.jpg through the real detector and face network, in this process: fed to the processor as
PyAV frames, and over an aiortc loopback into streamlit-webrtc's own worker (the way it tests itself), on
127.0.0.1 only, with no ICE servers."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.contrib.media import MediaRelay

from picmetric_core.config import Settings
from picmetric_core.live.processor import LiveControls, LiveProcessor
from picmetric_core.overlays import class_color
from picmetric_core.results import Detection
from tests.support.live import dog_rgb, is_loopback, loopback_ice

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
CONTROLS = LiveControls(input_side=416)


def box_edge_pixels(rgb: np.ndarray, detection: Detection, tolerance: int = 40) -> float:
    """The share of the detection's box outline (its top and left edges) drawn in its class colour."""
    box = detection.box
    x1, y1, x2, y2 = (round(v) for v in (box.x1, box.y1, box.x2, box.y2))
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w - 1), min(y2, h - 1)
    edge = np.concatenate([rgb[y1, x1:x2], rgb[y1:y2, x1]])
    close = np.abs(edge.astype(int) - np.array(class_color(detection.class_id))).max(axis=1) <= tolerance
    return float(close.mean())


def named(detections, label: str) -> Detection:
    return max((d for d in detections if d.label == label), key=lambda d: d.score)


def test_frames_from_dog_jpg_come_back_with_the_dog_and_the_bicycle_drawn(analyzer) -> None:
    processor = LiveProcessor(analyzer, CONTROLS, classify_every_s=None)
    rgb = dog_rgb()
    try:
        first = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        assert processor.recv(first) is first  # nothing analysed yet: the camera's frame goes back
        result = processor.wait_for_result(timeout=60)
        back = processor.recv(av.VideoFrame.from_ndarray(rgb, format="rgb24")).to_ndarray(format="rgb24")
    finally:
        processor.close()
    assert {"dog", "bicycle"} <= {d.label for d in result.detections}
    for label in ("dog", "bicycle"):
        detection = named(result.detections, label)
        assert box_edge_pixels(back, detection) > 0.5, label  # its box is drawn where it was found
        assert box_edge_pixels(rgb, detection) < 0.2, label  # and was not in the photo itself


def _dog_frames(pts: int, time_base: fractions.Fraction) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(_DOG, format="rgb24")


_DOG = dog_rgb()


async def _loopback(analyzer, outside: list[str]) -> dict:
    from streamlit_webrtc.config import compile_rtc_configuration
    from streamlit_webrtc.source import VideoSourceTrack
    from streamlit_webrtc.webrtc import WebRtcMode, WebRtcWorker

    from picmetric_ui.live import rtc_configuration

    loop = asyncio.get_running_loop()
    server_config = compile_rtc_configuration(rtc_configuration(Settings(_env_file=None)))
    assert server_config.iceServers == []  # no STUN or TURN server unless configured
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTrack(VideoSourceTrack(_dog_frames, fps=30))
    received: list[np.ndarray] = []
    draining: list[asyncio.Future] = []

    @client.on("track")
    def on_track(track) -> None:
        async def drain() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                received.append(frame.to_ndarray(format="rgb24"))

        draining.append(asyncio.ensure_future(drain()))

    processors: list[LiveProcessor] = []

    def factory() -> LiveProcessor:
        processors.append(LiveProcessor(analyzer, CONTROLS))
        return processors[-1]

    worker = WebRtcWorker(
        mode=WebRtcMode.SENDRECV,
        rtc_configuration=server_config,
        source_video_track=None,
        source_audio_track=None,
        sink_video_track=None,
        sink_audio_track=None,
        player_factory=None,
        in_recorder_factory=None,
        out_recorder_factory=None,
        video_frame_callback=None,
        audio_frame_callback=None,
        queued_video_frames_callback=None,
        queued_audio_frames_callback=None,
        on_video_ended=None,
        on_audio_ended=None,
        video_processor_factory=factory,
        audio_processor_factory=None,
        async_processing=False,
        video_receiver_size=4,
        audio_receiver_size=4,
        sendback_video=True,
        sendback_audio=False,
        loop=loop,
        relay=MediaRelay(),
    )
    await client.setLocalDescription(await client.createOffer())
    answer = await asyncio.to_thread(
        worker.process_offer, client.localDescription.sdp, client.localDescription.type, 30
    )
    await client.setRemoteDescription(answer)
    try:
        deadline = loop.time() + 90
        while loop.time() < deadline and not (
            processors and processors[0].stats().processed >= 10 and len(received) > 30
        ):
            await asyncio.sleep(0.2)
        processor = processors[0]
        stats, result = processor.stats(), processor.result()
        pairs = [
            (pair.local_candidate.host, pair.remote_candidate.host)
            for pc in (client, worker.pc)
            for transceiver in pc.getTransceivers()
            if transceiver.receiver.transport is not None
            for pair in [transceiver.receiver.transport.transport.iceGatherer._connection._nominated.get(1)]
            if pair is not None
        ]
        return {"stats": stats, "result": result, "received": received[-1] if received else None, "pairs": pairs}
    finally:
        await asyncio.to_thread(worker.stop, 5.0)
        await client.close()
        await asyncio.sleep(0.3)
        assert processors and not processors[0].running  # the ended stream let its worker go


def test_an_aiortc_loopback_brings_frames_back_analysed_on_127_0_0_1_only(analyzer) -> None:
    outside: list[str] = []
    with loopback_ice(outside):
        flow = asyncio.run(_loopback(analyzer, outside))
    assert outside == []
    assert flow["pairs"] and all(is_loopback(a) and is_loopback(b) for a, b in flow["pairs"])
    stats = flow["stats"]
    assert stats.processed >= 10
    assert stats.received - (stats.processed + stats.dropped + stats.pending) in (0, 1)  # nothing queued
    assert {"dog", "bicycle"} <= {d.label for d in flow["result"].detections}
    back = flow["received"]  # VP8 went both ways: colours are near, not equal
    assert back is not None and back.shape == _DOG.shape
    assert box_edge_pixels(back, named(flow["result"].detections, "dog"), tolerance=70) > 0.4
