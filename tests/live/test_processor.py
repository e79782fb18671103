"""The live frame processor with stand-in networks: latest frame wins, drops are counted, nothing queues,
the classifier keeps its cadence, and a stream that stops lets its threads go."""

from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest

from picmetric_core.live.processor import LiveControls, LiveProcessor, shrink
from picmetric_core.results import Box, Classification, Detection

pytestmark = pytest.mark.timeout(60)


class StandIns:
    """Networks that find one "dog" box in the middle of any frame, each call taking ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.shapes: list[tuple[int, ...]] = []
        self.classified = 0
        self.detector, self.faces, self.classifier = self, self, self

    def detect(self, rgb, score_threshold=0.1, iou_threshold=0.9):
        self.shapes.append(rgb.shape)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay_s)
        h, w = rgb.shape[:2]
        found = [Detection("dog", 16, 0.9, Box(w / 4, h / 4, 3 * w / 4, 3 * h / 4))]
        found.append(Detection("cat", 15, 0.3, Box(0, 0, w / 8, h / 8)))
        return [d for d in found if d.score >= score_threshold]

    def detect_faces(self, rgb, min_confidence=0.6):
        return []

    def classify(self, rgb, top_k=5):
        self.classified += 1
        return [Classification("golden_retriever", 207, 0.8)]


def frame(value: int = 0, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def test_frames_arriving_while_one_is_analysed_are_dropped_and_counted() -> None:
    networks = StandIns()
    networks.gate = threading.Event()
    processor = LiveProcessor(networks, classify_every_s=None)
    try:
        processor.offer(frame(1))
        assert networks.started.wait(5)  # the worker has frame 1 and is stuck in the detector
        for value in range(2, 11):
            processor.offer(frame(value))
        stats = processor.stats()
        assert (stats.received, stats.processed, stats.dropped, stats.pending) == (10, 0, 8, 1)
        networks.gate.set()
        result = processor.wait_for_result(after=1, timeout=5)
        assert result is not None and result.frame_number == 10  # the newest frame, not the next in line
        stats = processor.stats()
        assert (stats.processed, stats.dropped, stats.pending) == (2, 8, 0)
    finally:
        processor.close()


def test_a_slow_network_never_grows_a_queue() -> None:
    processor = LiveProcessor(StandIns(delay_s=0.05), classify_every_s=None)
    try:
        for index in range(300):  # 300 frames at ~1000/s into a network that manages 20/s
            processor.offer(frame(index % 256))
            stats = processor.stats()
            assert stats.pending <= 1
            in_flight = stats.received - stats.processed - stats.dropped - stats.pending
            assert in_flight in (0, 1)  # at most one frame in the networks and one waiting, ever
            time.sleep(0.001)
        final = processor.wait_for_result(after=0, timeout=5)
        assert final is not None
        time.sleep(0.2)
        stats = processor.stats()
        assert stats.received == 300 and stats.pending == 0
        assert stats.processed + stats.dropped == 300
        assert stats.processed < 40 and stats.dropped > 250
    finally:
        processor.close()


def test_recv_gives_back_the_camera_frame_first_then_the_analysed_frame_drawn_on() -> None:
    processor = LiveProcessor(StandIns(), classify_every_s=None)
    try:
        first = av.VideoFrame.from_ndarray(frame(40, (240, 320)), format="rgb24")
        assert processor.recv(first) is first
        processor.wait_for_result(timeout=5)
        back = processor.recv(av.VideoFrame.from_ndarray(frame(40, (240, 320)), format="rgb24")).to_ndarray(
            format="rgb24"
        )
        assert back.shape == (240, 320, 3)
        # the dog's box edge (x = 80) is drawn, the middle of the box is the frame's own grey
        assert not np.array_equal(back[120, 78:83], np.full((5, 3), 40))
        assert np.array_equal(back[120, 160], [40, 40, 40])
        corner = back[:14, :60]  # the readout: light text on a dark band in the top-left corner
        assert corner.min() <= 20 and corner.max() > 200
    finally:
        processor.close()


def test_controls_filter_classes_and_shrink_frames_and_apply_to_a_running_stream() -> None:
    networks = StandIns()
    processor = LiveProcessor(networks, LiveControls(input_side=320, detection_threshold=0.2), classify_every_s=None)
    try:
        processor.offer(frame(0, (480, 640)))
        result = processor.wait_for_result(timeout=5)
        assert networks.shapes[-1] == (240, 320, 3)
        assert {d.label for d in result.detections} == {"dog", "cat"}
        assert result.detections[0].box == Box(160, 120, 480, 360)  # in the full frame's pixels
        processor.update(LiveControls(input_side=640, detection_threshold=0.2, classes=frozenset({"cat"})))
        processor.offer(frame(0, (480, 640)))
        result = processor.wait_for_result(after=result.frame_number, timeout=5)
        assert networks.shapes[-1] == (480, 640, 3)
        assert [d.label for d in result.detections] == ["cat"]
    finally:
        processor.close()


def test_the_classifier_runs_on_its_own_slower_cadence() -> None:
    networks = StandIns(delay_s=0.01)
    processor = LiveProcessor(networks, classify_every_s=0.2)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.2:
            processor.offer(frame())
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        assert processor.caption()[0].label == "golden_retriever"
        assert 2 <= networks.classified <= elapsed / 0.2 + 1
        assert processor.stats().processed > 2 * networks.classified
    finally:
        processor.close()


def test_a_stream_that_stops_releases_its_threads_within_seconds() -> None:
    before = threading.active_count()
    processor = LiveProcessor(StandIns(delay_s=0.02), classify_every_s=0.1)
    for _ in range(20):
        processor.offer(frame())
        time.sleep(0.01)
    assert processor.running and threading.active_count() == before + 2
    started = time.monotonic()
    processor.on_ended()
    assert not processor.running and time.monotonic() - started < 2
    assert threading.active_count() == before
    processor.offer(frame())  # a frame after the end is ignored: nothing starts again
    assert not processor.running and processor.snapshot() is None


def test_frames_that_stop_coming_end_the_threads_and_new_ones_start_them_again() -> None:
    processor = LiveProcessor(StandIns(), classify_every_s=0.05, idle_s=0.3)
    try:
        processor.offer(frame())
        assert processor.wait_for_result(timeout=5) is not None
        deadline = time.monotonic() + 3
        while processor.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processor.running  # the tab went away without saying so
        processor.offer(frame(9))
        assert processor.wait_for_result(after=1, timeout=5).frame_number == 2
    finally:
        processor.close()


def test_shrink_never_enlarges() -> None:
    small = frame(0, (100, 80))
    assert shrink(small, 416)[0] is small
    assert shrink(frame(0, (480, 640)), 416)[0].shape == (312, 416, 3)


@pytest.mark.parametrize("parallel", [False, True])
def test_a_failing_network_stops_the_stream_and_says_so(parallel: bool) -> None:
    class BrokenFaces(StandIns):
        def detect_faces(self, rgb, min_confidence=0.6):
            raise RuntimeError("MTCNN fell over")

    processor = LiveProcessor(BrokenFaces(), classify_every_s=None, parallel=parallel)
    processor.offer(frame())
    deadline = time.monotonic() + 5
    while processor.error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert isinstance(processor.error, RuntimeError)
    processor.close()
    assert not processor.running


def test_a_frame_after_the_worker_went_idle_is_analysed_even_while_the_classifier_still_waits() -> None:
    processor = LiveProcessor(StandIns(), classify_every_s=0.6, idle_s=0.2)
    try:
        processor.offer(frame())
        assert processor.wait_for_result(timeout=5) is not None
        time.sleep(0.4)  # the analysing thread has ended; the classifier's is still asleep
        processor.offer(frame(5))
        assert processor.wait_for_result(after=1, timeout=3) is not None
    finally:
        processor.close()
