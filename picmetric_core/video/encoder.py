"""H.264 encoding on its own thread, so drawing frame *n + 1* overlaps x264 encoding frame *n*.

PyAV releases the GIL inside the encoder, so on the 2-core machine the drawing thread and x264 share the cores:
the annotated 720p clip's pass went from ~9.2 to ~3.3 ms a frame together with the colour conversions done by
OpenCV (:func:`rgb_to_i420`), measured interleaved in one run (docs/video.md).

Example:
    >>> with BackgroundEncoder(output, stream) as encoder:  # doctest: +SKIP
    ...     encoder.put(frame)
"""

from __future__ import annotations

import queue
import threading
from types import TracebackType

import cv2
import numpy as np

QUEUE_FRAMES = 8
"""Frames waiting for the encoder at most (8 × 1.4 MB of 720p YUV): drawing never runs far ahead."""
_DONE = object()


def i420_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """A decoded ``yuv420p`` frame (PyAV's ``(h·3/2, w)`` array) as RGB; OpenCV's conversion is ~2× swscale's here."""
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """An even-sized RGB frame as a ``yuv420p`` array for :meth:`av.VideoFrame.from_ndarray` (BT.601, limited range).

    Example:
        >>> rgb_to_i420(np.zeros((4, 6, 3), np.uint8)).shape, i420_to_rgb(np.zeros((6, 6), np.uint8)).shape
        ((6, 6), (4, 6, 3))
    """
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


class BackgroundEncoder:
    """Encodes and muxes the frames it is given on one thread, in order; an encoder error is raised on the
    next :meth:`put` or on leaving the ``with`` block. Leaving the block flushes the encoder.

    Other streams' packets (the sound) go through :meth:`mux`: the container is written from both threads.
    """

    def __init__(self, output, stream) -> None:  # type: ignore[no-untyped-def]
        self._output = output
        self._stream = stream
        self._frames: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._mux_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="picmetric-video-encoder", daemon=True)

    def __enter__(self) -> BackgroundEncoder:
        self._thread.start()
        return self

    def put(self, frame) -> None:  # type: ignore[no-untyped-def]
        """Queue one ``av.VideoFrame`` (waits while the queue is full)."""
        self._raise_error()
        while True:
            try:
                self._frames.put(frame, timeout=0.5)
                return
            except queue.Full:
                self._raise_error()

    def mux(self, packets) -> None:  # type: ignore[no-untyped-def]
        """Write packets of another stream into the container."""
        with self._mux_lock:
            for packet in packets:
                self._output.mux(packet)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._frames.put(_DONE)  # the thread takes everything up to it, even after an error
        self._thread.join()
        if kind is None:
            self._raise_error()
            self.mux(self._stream.encode())

    def _run(self) -> None:
        try:
            while (frame := self._frames.get()) is not _DONE:
                self.mux(self._stream.encode(frame))
        except BaseException as error:  # handed to the drawing thread
            self._error = error
            while self._frames.get() is not _DONE:  # drained, so put() and __exit__ never wait forever
                pass

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
