"""Decoding a clip frame by frame with PyAV, and sampling it at a fixed rate for the networks.

Frames are streamed: one decoded frame at a time is held, whatever the clip's length. Every frame checks
the analysis's deadline and the limits again (a container may lie about its length), and a clip that ends
well before what it declared is refused as cut short. A clip stored turned (a phone's display rotation,
:attr:`VideoInfo.rotation`) is turned upright as its frames are converted: the networks, the poster and the
annotated clip see it as it is shown.

Example:
    >>> for frame in sampled_frames(data, info, 5.0, limits, Deadline(60)):  # doctest: +SKIP
    ...     frame.index, frame.time_s, frame.rgb.shape
    (0, 0.0, (360, 640, 3))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from picmetric_core.errors import VideoRejected, VideoTooLarge
from picmetric_core.video.probe import Deadline, VideoLimits, VideoSource, open_clip
from picmetric_core.video.results import VideoInfo

NETWORK_SIDE = 640
"""Sampled frames are scaled to this longer side for the networks (never enlarged); boxes come back in the
clip's pixels. 640 keeps MTCNN's smallest face at ~20 px of a 1280-wide clip, at ~55 ms a frame here."""
TRUNCATED_SLACK_S = 1.0
"""A clip may end this much (plus 10 %) before the length it declares before it counts as cut short."""


@dataclass(frozen=True)
class DecodedFrame:
    """One frame of the clip: its number, its time from the start, and the PyAV frame."""

    number: int
    time_s: float
    frame: object = field(repr=False)  # av.VideoFrame


@dataclass(frozen=True)
class SampledFrame:
    """A frame taken for the networks: ``rgb`` at most :data:`NETWORK_SIDE` long, ``scale`` back to the clip."""

    index: int
    time_s: float
    rgb: np.ndarray = field(repr=False)
    scale: float


def network_size(width: int, height: int, side: int = NETWORK_SIDE) -> tuple[int, int]:
    """The (even) size a frame is scaled to for the networks.

    Example:
        >>> network_size(1280, 720), network_size(320, 240)
        ((640, 360), (320, 240))
    """
    longest = max(width, height)
    if longest <= side:
        return width, height
    factor = side / longest
    return max(2, round(width * factor / 2) * 2), max(2, round(height * factor / 2) * 2)


def stored_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """The size a stored frame is scaled to so that, turned upright by ``rotation``, it is ``width`` × ``height``.

    Example:
        >>> stored_size(360, 640, 90), stored_size(640, 360, 180)
        ((640, 360), (640, 360))
    """
    return (height, width) if rotation % 180 else (width, height)


def upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """A stored frame's pixels (rows first) turned ``rotation`` degrees counter-clockwise, as the clip is shown.

    Example:
        >>> upright(np.arange(6).reshape(2, 3), 90).tolist()
        [[2, 5], [1, 4], [0, 3]]
    """
    if not rotation:
        return pixels
    return np.ascontiguousarray(np.rot90(pixels, rotation // 90))


def decoded_frames(
    source: VideoSource, info: VideoInfo, limits: VideoLimits, deadline: Deadline, *, audio: bool = False
) -> Iterator[DecodedFrame | object]:
    """Every frame of the clip's first video stream in order (and, with ``audio``, its audio packets as they come).

    Raises:
        VideoRejected: a frame could not be decoded (damaged), no frame at all, or the clip ends well before
            its declared length (cut short).
        VideoTooLarge: more frames or seconds than the limits allow, whatever the container declared.
        VideoTimedOut: the deadline passed.
    """
    import av

    with open_clip(source, deadline) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        streams = [stream, container.streams.audio[0]] if audio and container.streams.audio else [stream]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        number = 0
        last_time = 0.0
        try:
            for packet in container.demux(streams):
                deadline.check()
                if packet.stream.type == "audio":
                    yield packet
                    continue
                for frame in packet.decode():
                    time_s = max(0.0, float(frame.time) - start) if frame.time is not None else last_time
                    if number >= limits.max_frames or time_s > limits.max_seconds + TRUNCATED_SLACK_S:
                        raise VideoTooLarge(
                            f"The video runs past the limit of {limits.max_seconds:g} s "
                            "(more than its header declared)."
                        )
                    yield DecodedFrame(number, time_s, frame)
                    number += 1
                    last_time = time_s
        except av.FFmpegError as error:
            deadline.check()
            raise VideoRejected(f"This video is damaged: frame {number + 1} could not be decoded.") from error
    if number == 0:
        raise VideoRejected("No frame of this video could be decoded: the file is damaged or cut short.")
    declared = info.duration_s
    frame_s = 1 / info.fps if info.fps else 0.0
    if declared and last_time + frame_s < declared * 0.9 - TRUNCATED_SLACK_S:
        raise VideoRejected(
            f"This video is cut short: its frames end at {last_time:.1f} s of the {declared:.1f} s it declares."
        )


def sampled_frames(
    source: VideoSource,
    info: VideoInfo,
    sample_fps: float,
    limits: VideoLimits,
    deadline: Deadline,
    side: int = NETWORK_SIDE,
) -> Iterator[SampledFrame]:
    """The frames nearest to every ``1 / sample_fps`` seconds as RGB, at most ``side`` long (:func:`decoded_frames`),
    turned upright when the clip has a display rotation.

    Only sampled frames are converted to RGB (scaled by FFmpeg while converting); the rest are decoded and dropped.
    """
    width, height = network_size(info.width, info.height, side)
    scaled_width, scaled_height = stored_size(width, height, info.rotation)
    scale = info.width / width
    step = 1.0 / sample_fps
    half_frame = 0.5 / info.fps if info.fps else 0.0
    next_time = 0.0
    index = 0
    for decoded in decoded_frames(source, info, limits, deadline):
        assert isinstance(decoded, DecodedFrame)
        if decoded.time_s + half_frame < next_time:
            continue
        rgb = decoded.frame.to_ndarray(format="rgb24", width=scaled_width, height=scaled_height)  # type: ignore[attr-defined]
        yield SampledFrame(index, round(decoded.time_s, 3), upright(rgb, info.rotation), scale)
        index += 1
        while next_time <= decoded.time_s + half_frame:
            next_time += step


def expected_samples(info: VideoInfo, sample_fps: float) -> int:
    """About how many frames :func:`sampled_frames` will give (for progress)."""
    return max(1, int(info.duration_s * sample_fps) + 1)


def frame_at(
    source: VideoSource, info: VideoInfo, time_s: float, limits: VideoLimits, deadline: Deadline
) -> np.ndarray:
    """The clip's frame at ``time_s`` (or its last, when shorter) as full-size RGB, upright."""
    chosen = None
    for decoded in decoded_frames_until(source, info, time_s, limits, deadline):
        chosen = decoded
    if chosen is None:
        raise VideoRejected("No frame of this video could be decoded: the file is damaged or cut short.")
    return upright(chosen.frame.to_ndarray(format="rgb24"), info.rotation)  # type: ignore[attr-defined]


def decoded_frames_until(
    source: VideoSource, info: VideoInfo, time_s: float, limits: VideoLimits, deadline: Deadline
) -> Iterator[DecodedFrame]:
    """The clip's frames from the start up to the first at or after ``time_s`` (decoding stops there)."""
    import av

    with open_clip(source, deadline) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        try:
            for number, frame in enumerate(container.decode(stream)):
                deadline.check()
                if number >= limits.max_frames:
                    return
                frame_time = max(0.0, float(frame.time) - start) if frame.time is not None else 0.0
                yield DecodedFrame(number, frame_time, frame)
                if frame_time >= time_s:
                    return
        except av.FFmpegError as error:
            raise VideoRejected("This video is damaged: its first frames could not be decoded.") from error
