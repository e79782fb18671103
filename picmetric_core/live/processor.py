"""The Live page's frame processor: the detector and the face network on the newest camera frame.

Frames come in at the camera's rate (:meth:`LiveProcessor.offer`, or :meth:`LiveProcessor.recv` with a
PyAV frame, the way streamlit-webrtc calls a video processor). One worker thread analyses one frame at
a time; at most one frame waits for it, and a newer frame replaces the waiting one, which is counted as
dropped. Nothing ever queues, so the latency stays flat however slow the networks or the network link.
The classifier runs on its own slower cadence (about twice a second) on the newest frame, for a caption.

Both threads start with the first frame and end on :meth:`LiveProcessor.close` (streamlit-webrtc calls
``on_ended`` when the stream stops) or after ``idle_s`` without frames (a tab closed without a goodbye);
a later frame starts them again.

No Streamlit here: the page hands the processor to streamlit-webrtc and reads :meth:`stats` from it.

Example:
    >>> from picmetric_core.live.processor import LiveProcessor, LiveControls
    >>> processor = LiveProcessor(analyzer, LiveControls(detection_threshold=0.4))  # doctest: +SKIP
    >>> processor.offer(rgb); processor.wait_for_result(timeout=5).detections  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.live.drawing import draw_frame, scaled_results
from picmetric_core.models.base import Classifier, Detector, FaceDetector
from picmetric_core.results import Classification, Detection, Face

if TYPE_CHECKING:
    import av

log = logging.getLogger(__name__)

INPUT_SIDES = (320, 416, 512, 640)
"""The longest sides a frame may be analysed at (the page's "Input size"); boxes are drawn on the full frame."""
CLASSIFY_EVERY_S = 0.5
IDLE_S = 5.0
STATS_WINDOW = 60  # the last frames the readout's fps and latency percentiles are taken over


class LiveNetworks(Protocol):
    """What the processor needs: :class:`~picmetric_core.pipeline.Analyzer` has all three."""

    classifier: Classifier
    detector: Detector
    faces: FaceDetector


@dataclass(frozen=True)
class LiveControls:
    """What the page's controls choose; :meth:`LiveProcessor.update` swaps them while a stream runs.

    Attributes:
        classes: Detection labels to show (official COCO names); ``None`` shows every class.
        detection_threshold: The lowest object score shown.
        nms_iou: The detector's class-wise overlap limit.
        face_threshold: The lowest face score shown.
        input_side: Frames are shrunk to this longest side before the networks see them (never enlarged).
        faces: Run the face network at all.
    """

    classes: frozenset[str] | None = None
    detection_threshold: float = DEFAULT_THRESHOLDS.min_detection_score
    nms_iou: float = DEFAULT_THRESHOLDS.nms_iou
    face_threshold: float = DEFAULT_THRESHOLDS.min_face_score
    input_side: int = 416
    faces: bool = True


@dataclass(frozen=True)
class LiveStats:
    """Counts since the stream started, and the readout's figures over the last frames."""

    received: int = 0
    processed: int = 0
    dropped: int = 0
    fps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    pending: int = 0

    def readout(self) -> str:
        """The on-frame text, e.g. ``'14.8 fps | 72 ms'`` (OpenCV's fonts have ASCII only)."""
        return f"{self.fps:.1f} fps | {self.latency_p50_ms:.0f} ms"


@dataclass(frozen=True)
class LiveResult:
    """One analysed frame: what was found (in the frame's pixels) and the frame with it drawn on."""

    frame_number: int
    detections: tuple[Detection, ...]
    faces: tuple[Face, ...]
    drawn: np.ndarray = field(repr=False)
    latency_ms: float = 0.0


class LiveProcessor:
    """Detector + faces on the newest frame, one at a time; the classifier on a slower cadence.

    Thread-safe: frames come from the WebRTC thread, controls and reads from the page's script thread.

    Args:
        networks: The loaded networks (the shared runtime's analyzer); each is thread-safe.
        controls: The first controls.
        classify_every_s: The classifier's cadence; ``None`` never runs it.
        idle_s: The threads end after this long without a frame.
        parallel: Run the face network beside the detector (a thread of its own per frame); no faster on the
            2-core CPU measured (bench/live_bench.py --compare), so off by default.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        networks: LiveNetworks,
        controls: LiveControls | None = None,
        *,
        classify_every_s: float | None = CLASSIFY_EVERY_S,
        idle_s: float = IDLE_S,
        parallel: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._networks = networks
        self._parallel = parallel
        self._controls = controls or LiveControls()
        self._classify_every_s = classify_every_s
        self._idle_s = idle_s
        self._clock = clock
        self._lock = threading.Condition()
        self._pending: tuple[int, np.ndarray, float] | None = None  # frame number, rgb, arrival time
        self._newest: np.ndarray | None = None
        self._result: LiveResult | None = None
        self._caption: tuple[Classification, ...] = ()
        self._received = self._processed = self._dropped = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=STATS_WINDOW)  # (done at, latency ms)
        self._last_arrival = 0.0
        self._closed = False
        self._threads: dict[str, threading.Thread] = {}  # "analyse" and "classify", while they run
        self.error: BaseException | None = None

    # Frames in ------------------------------------------------------------------------------------------

    def offer(self, rgb: np.ndarray) -> None:
        """Hand over a new HxWx3 uint8 RGB frame; never blocks. A frame still waiting is replaced (dropped)."""
        with self._lock:
            if self._closed:
                return
            self._received += 1
            if self._pending is not None:
                self._dropped += 1
            self._last_arrival = self._clock()
            self._pending = (self._received, rgb, self._last_arrival)
            self._newest = rgb
            self._start_threads()
            self._lock.notify_all()

    def recv(self, frame: av.VideoFrame) -> av.VideoFrame:
        """streamlit-webrtc's video processor call: offer ``frame``, return the newest analysed frame.

        Until the first frame is analysed the camera's own frame goes back unchanged.
        """
        import av

        self.offer(frame.to_ndarray(format="rgb24"))
        result = self.result()
        if result is None:
            return frame
        return av.VideoFrame.from_ndarray(result.drawn, format="rgb24")

    def on_ended(self) -> None:
        """streamlit-webrtc's call when the stream ends (STOP, tab closed, connection lost)."""
        self.close()

    # Reads ----------------------------------------------------------------------------------------------

    def update(self, controls: LiveControls) -> None:
        """Use ``controls`` from the next frame on."""
        with self._lock:
            self._controls = controls

    @property
    def controls(self) -> LiveControls:
        with self._lock:
            return self._controls

    def result(self) -> LiveResult | None:
        """The newest analysed frame, or ``None`` before the first."""
        with self._lock:
            return self._result

    def caption(self) -> tuple[Classification, ...]:
        """The classifier's top classes for a recent frame (empty before its first run)."""
        with self._lock:
            return self._caption

    def snapshot(self) -> np.ndarray | None:
        """The newest camera frame as it came in (no drawing), or ``None`` before the first."""
        with self._lock:
            return None if self._newest is None else self._newest.copy()

    def stats(self) -> LiveStats:
        with self._lock:
            return self._stats_locked()

    def wait_for_result(self, after: int = 0, timeout: float = 10.0) -> LiveResult | None:
        """Block until a frame numbered above ``after`` has been analysed (``None`` on timeout)."""
        with self._lock:
            self._lock.wait_for(
                lambda: self._closed or (self._result is not None and self._result.frame_number > after), timeout
            )
            result = self._result
        return result if result is not None and result.frame_number > after else None

    @property
    def running(self) -> bool:
        """Whether a worker thread is alive (threads end on close and when frames stop coming)."""
        return any(thread.is_alive() for thread in self._threads.values())

    def close(self, timeout: float = 5.0) -> None:
        """Stop both threads and drop the frames held; no frame is taken afterwards."""
        with self._lock:
            self._closed = True
            self._pending = None
            self._newest = None
            self._lock.notify_all()
            threads, self._threads = list(self._threads.values()), {}
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # The threads ----------------------------------------------------------------------------------------

    def _start_threads(self) -> None:
        """Start whichever thread is not running (each ends on its own when frames stop coming)."""
        loops = {"analyse": self._analyse_loop}
        if self._classify_every_s is not None:
            loops["classify"] = self._classify_loop
        for name, loop in loops.items():
            thread = self._threads.get(name)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._guarded(loop), name=f"picmetric-live-{name}", daemon=True)
                self._threads[name] = thread
                thread.start()

    def _guarded(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as error:  # a network that fails stops this stream, and says why
                log.exception("the live stream's worker failed")
                with self._lock:
                    self.error = error
                    self._closed = True
                    self._lock.notify_all()

        return run

    def _next_frame(self) -> tuple[int, np.ndarray, float, LiveControls] | None:
        with self._lock:
            if not self._lock.wait_for(lambda: self._closed or self._pending is not None, self._idle_s):
                return None  # idle: the thread ends; the next frame starts a new one
            if self._closed:
                return None
            number, rgb, arrived = self._pending
            self._pending = None
            return number, rgb, arrived, self._controls

    def _analyse_loop(self) -> None:
        while (item := self._next_frame()) is not None:
            number, rgb, arrived, controls = item
            detections, faces = self._find(rgb, controls)
            done = self._clock()
            latency_ms = (done - arrived) * 1000
            with self._lock:
                if self._closed:
                    return
                self._processed += 1
                self._recent.append((done, latency_ms))
                readout = self._stats_locked().readout()
            drawn = draw_frame(rgb, detections, faces, readout)
            with self._lock:
                self._result = LiveResult(number, tuple(detections), tuple(faces), drawn, latency_ms)
                self._lock.notify_all()

    def _find(self, rgb: np.ndarray, controls: LiveControls) -> tuple[list[Detection], list[Face]]:
        small, factor = shrink(rgb, controls.input_side)
        faces: list[Face] = []
        failed: list[BaseException] = []

        def find_faces() -> None:
            try:
                faces.extend(self._networks.faces.detect_faces(small, min_confidence=controls.face_threshold))
            except BaseException as error:
                failed.append(error)

        # Side by side: each network holds its own lock, and one's host work overlaps the other's arithmetic.
        helper = threading.Thread(target=find_faces, name="picmetric-live-faces", daemon=True)
        if controls.faces and self._parallel:
            helper.start()
        try:
            detections = self._networks.detector.detect(
                small, score_threshold=controls.detection_threshold, iou_threshold=controls.nms_iou
            )
        finally:
            if helper.is_alive():
                helper.join()
        if controls.faces and not self._parallel:
            find_faces()
        if failed:
            raise failed[0]
        if controls.classes is not None:
            detections = [d for d in detections if d.label in controls.classes]
        return scaled_results(detections, faces, factor)

    def _classify_loop(self) -> None:
        assert self._classify_every_s is not None
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed, self._classify_every_s)
                if self._closed or self._clock() - self._last_arrival > self._idle_s:
                    return
                rgb = self._newest
            if rgb is not None:
                classes = self._networks.classifier.classify(rgb, top_k=5)
                with self._lock:
                    self._caption = tuple(classes)

    def _stats_locked(self) -> LiveStats:
        recent = list(self._recent)
        fps = 0.0
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            fps = (len(recent) - 1) / (recent[-1][0] - recent[0][0])
        latencies = [ms for _, ms in recent]
        p50, p95 = np.percentile(latencies, [50, 95]).tolist() if latencies else (0.0, 0.0)
        return LiveStats(
            received=self._received,
            processed=self._processed,
            dropped=self._dropped,
            fps=fps,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            pending=int(self._pending is not None),
        )


def shrink(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """``rgb`` with its longest side at most ``side``, and the factor that maps its pixels back.

    Example:
        >>> import numpy as np
        >>> small, factor = shrink(np.zeros((480, 640, 3), np.uint8), 320)
        >>> small.shape, factor
        ((240, 320, 3), 2.0)
    """
    longest = max(rgb.shape[:2])
    if side <= 0 or longest <= side:
        return rgb, 1.0
    scale = side / longest
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), longest / side
