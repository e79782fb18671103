"""What a clip is, checked against the limits before a frame is decoded.

A clip is recognised by its container's first bytes (never by its name): MP4/MOV (an ISO-BMFF box),
Matroska/WebM (the EBML header) or AVI (RIFF ... AVI). :func:`probe` opens it with PyAV and refuses, each
with a message for the person who sent it: an empty or unreadable file, audio only, a codec we do not
decode, and a size, length, frame count or frame size over the limits (:class:`VideoLimits`).

Example:
    >>> limits = VideoLimits.from_settings(Settings(_env_file=None))  # doctest: +SKIP
    >>> probe(open("clip.mp4", "rb").read(), limits).codec  # doctest: +SKIP
    'h264'
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from picmetric_core.errors import VideoRejected, VideoTimedOut, VideoTooLarge
from picmetric_core.intake.images import format_size
from picmetric_core.video.results import VideoInfo

if TYPE_CHECKING:
    import av.container

    from picmetric_core.config import Settings

VideoSource = bytes | Path
"""A clip's bytes, or the path of a file holding them (read as it is decoded, never all at once)."""

SUPPORTED_CONTAINERS = "MP4, MOV, WebM, MKV or AVI"
NOT_A_VIDEO_MESSAGE = f"This file is not a video PicMetric can read ({SUPPORTED_CONTAINERS})."
# Video codecs decoded here, by FFmpeg's name, and how a person calls them.
SUPPORTED_CODECS = {
    "h264": "H.264",
    "hevc": "H.265/HEVC",
    "vp8": "VP8",
    "vp9": "VP9",
    "av1": "AV1",
    "mpeg4": "MPEG-4 Part 2",
    "mjpeg": "Motion JPEG",
}
MAX_FPS = 240.0
"""A declared frame rate above this is a broken or hostile header; also bounds the frames a clip may have."""
_ISO_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_EBML = b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True)
class VideoLimits:
    """What a clip may be: bytes, seconds, pixels per frame, and one deadline for its whole analysis."""

    max_bytes: int
    max_seconds: float
    max_pixels: int
    deadline_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        return cls(
            max_bytes=settings.video_max_bytes,
            max_seconds=settings.video_max_seconds,
            max_pixels=settings.video_max_pixels,
            deadline_s=settings.video_deadline_s,
        )

    @property
    def max_frames(self) -> int:
        """The most frames a clip within the length limit can have, at the highest frame rate accepted."""
        return math.ceil(self.max_seconds * MAX_FPS)


def sniff_container(head: bytes) -> str | None:
    """The container the first bytes of a file look like: ``"mp4"``, ``"matroska"``, ``"avi"`` or ``None``.

    Example:
        >>> sniff_container(b"\\x00\\x00\\x00\\x20ftypisom"), sniff_container(b"\\x1a\\x45\\xdf\\xa3\\x01")
        ('mp4', 'matroska')
        >>> sniff_container(b"RIFF\\x00\\x00\\x00\\x00AVI LIST"), sniff_container(b"\\xff\\xd8\\xff") is None
        ('avi', True)
    """
    if head[4:8] in _ISO_BMFF_BOXES:
        return "mp4"
    if head.startswith(_EBML):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def is_video(path: Path) -> bool:
    """Whether the file at ``path`` starts like a supported video container (its name is not looked at)."""
    try:
        with path.open("rb") as handle:
            return sniff_container(handle.read(16)) is not None
    except OSError:
        return False


def source_size(source: VideoSource) -> int:
    return len(source) if isinstance(source, bytes) else source.stat().st_size


class Deadline:
    """One wall-clock deadline for a whole analysis: every read of the clip and every frame checks it, and the
    caller waits for the work that calls FFmpeg only until it passes (:mod:`picmetric_core.video.watchdog`)."""

    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._ends = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._ends - self._clock())

    def check(self) -> None:
        """Raises :class:`VideoTimedOut` once the deadline has passed."""
        if self._clock() >= self._ends:
            raise self.timed_out()

    def timed_out(self) -> VideoTimedOut:
        """The error of an analysis that passed this deadline, with the message for the person who sent the clip."""
        return VideoTimedOut(
            f"The video took longer than the limit of {self.seconds:g} s to analyse (a stalled file or "
            "decoder, or a clip too long for this server); nothing was stored."
        )


class DeadlineReader(io.RawIOBase):
    """A clip's bytes for FFmpeg, read through Python so that every read (the demuxer's too) checks the deadline."""

    def __init__(self, raw: IO[bytes], deadline: Deadline) -> None:
        self._raw = raw
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self._deadline.check()
        return self._raw.read(size)

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._raw.close()
        super().close()


@contextmanager
def open_clip(source: VideoSource, deadline: Deadline) -> Iterator[av.container.InputContainer]:
    """The clip opened for reading by PyAV, every read under ``deadline``.

    Raises:
        VideoRejected: FFmpeg cannot read it as a container (damaged, cut short before its index, not a video).
        VideoTimedOut: the deadline passed.
    """
    import av

    raw: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
    reader = DeadlineReader(raw, deadline)
    try:
        try:
            container = av.open(reader, mode="r", timeout=max(deadline.remaining(), 0.001))
        except VideoTimedOut:
            raise
        except (av.FFmpegError, ValueError, OSError) as error:
            deadline.check()
            raise VideoRejected(
                "This video could not be read: the file is damaged or cut short (its index is missing)."
            ) from error
        try:
            yield container
        finally:
            container.close()
    finally:
        reader.close()


def probe(source: VideoSource, limits: VideoLimits, deadline: Deadline | None = None) -> VideoInfo:
    """What the clip declares, refused with a clear message when it is not one we analyse.

    Args:
        source: The clip's bytes or its file.
        limits: The byte, length, frame-size and frame-count limits.
        deadline: The analysis's deadline (a new one of ``limits.deadline_s`` by default).

    Raises:
        VideoRejected: empty, not a supported container, damaged, audio only, a codec we do not decode.
        VideoTooLarge: over the byte, pixel, length or frame-count limit.
        VideoTimedOut: reading the header passed the deadline.
    """
    size = source_size(source)
    if size == 0:
        raise VideoRejected("The file is empty (0 bytes).")
    if size > limits.max_bytes:
        raise VideoTooLarge(
            f"The video is {format_size(size, round_up=True)}; the limit is {format_size(limits.max_bytes)}."
        )
    head = source[:16] if isinstance(source, bytes) else _head(source)
    if sniff_container(head) is None:
        raise VideoRejected(NOT_A_VIDEO_MESSAGE)
    with open_clip(source, deadline or Deadline(limits.deadline_s)) as container:
        return check_limits(describe(container), limits)


def scan(source: VideoSource, info: VideoInfo, limits: VideoLimits, deadline: Deadline) -> None:
    """Read every video packet of the clip without decoding it (about a second for a long file), so that a clip
    cut short, or longer than its header says, is refused before any network runs.

    Raises:
        VideoRejected: damaged, or its packets end well before the length it declares (cut short).
        VideoTooLarge: more packets or seconds than the limits allow.
        VideoTimedOut: the deadline passed.
    """
    import av

    with open_clip(source, deadline) as container:
        stream = container.streams.video[0]
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        packets, last = 0, 0.0
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                packets += 1
                last = max(last, float(packet.pts * packet.time_base) - start)
                if packets % 256 == 0:
                    deadline.check()
                if packets > limits.max_frames or last > limits.max_seconds + 1.0:
                    raise VideoTooLarge(
                        f"The video runs past the limit of {_duration(limits.max_seconds)} "
                        "(more than its header declared)."
                    )
        except av.FFmpegError as error:
            raise VideoRejected("This video is damaged: its packets could not be read.") from error
    if packets == 0:
        raise VideoRejected("This video has no frames: the file is damaged or cut short.")
    frame_s = 1 / info.fps if info.fps else 0.0
    if info.duration_s and last + frame_s < info.duration_s * 0.9 - 1.0:
        raise VideoRejected(
            f"This video is cut short: its frames end at {last:.1f} s of the {info.duration_s:.1f} s it declares."
        )


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(16)


def describe(container: av.container.InputContainer) -> VideoInfo:
    """The :class:`VideoInfo` an opened container declares.

    Raises:
        VideoRejected: no video stream (audio only), or a codec we do not decode.
    """
    if not container.streams.video:
        if container.streams.audio:
            raise VideoRejected("This file has sound but no picture (audio only): there is nothing to analyse.")
        raise VideoRejected("This file has no video stream.")
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if codec not in SUPPORTED_CODECS:
        raise VideoRejected(
            f"The video is encoded as {codec}, which PicMetric does not decode "
            f"({', '.join(SUPPORTED_CODECS.values())})."
        )
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    frames = int(stream.frames) or None
    rotation = display_rotation(container)
    width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    return VideoInfo(
        duration_s=round(duration, 3),
        fps=round(fps, 3),
        width=height if rotation % 180 else width,
        height=width if rotation % 180 else height,
        codec=codec,
        container=container.format.name.split(",")[0],
        frame_count=frames,
        has_audio=bool(container.streams.audio),
        rotation=rotation,
    )


def display_rotation(container: av.container.InputContainer) -> int:
    """Degrees counter-clockwise (0, 90, 180 or 270) the first video stream's frames are turned to be shown
    upright: the display matrix a phone writes instead of turning the picture it stores.

    PyAV gives the matrix on decoded frames only, so the first frame is decoded (a few milliseconds). A first
    frame that cannot be decoded counts as upright: decoding the clip reports the damage.
    """
    import av

    try:
        for frame in container.decode(container.streams.video[0]):
            return round(frame.rotation / 90) % 4 * 90
    except av.FFmpegError:
        pass
    return 0


def check_limits(info: VideoInfo, limits: VideoLimits) -> VideoInfo:
    """``info`` when it is within ``limits``; raises :class:`VideoTooLarge` or :class:`VideoRejected` otherwise."""
    if info.width <= 0 or info.height <= 0:
        raise VideoRejected("The video declares no frame size: the file is damaged.")
    if info.width * info.height > limits.max_pixels:
        raise VideoTooLarge(
            f"The video's frames are {info.width:,}×{info.height:,} pixels; the limit is "
            f"{limits.max_pixels:,} pixels a frame (e.g. 3840×2160)."
        )
    if info.fps > MAX_FPS:
        raise VideoRejected(f"The video declares {info.fps:,.0f} frames a second; at most {MAX_FPS:g} are accepted.")
    if info.duration_s > limits.max_seconds:
        raise VideoTooLarge(
            f"The video is {_duration(info.duration_s)} long; the limit is {_duration(limits.max_seconds)}."
        )
    if info.frame_count is not None and info.frame_count > limits.max_frames:
        raise VideoTooLarge(
            f"The video declares {info.frame_count:,} frames; a clip within the length limit has at most "
            f"{limits.max_frames:,}."
        )
    return info


def _duration(seconds: float) -> str:
    """``'12.5 s'`` under a minute, else ``'10 min 5 s'``."""
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" + (f" {rest} s" if rest else "")
