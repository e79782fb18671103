"""The annotated clip: every frame of the original with boxes, track ids, short trails and the counting line,
encoded as H.264 in an MP4 that browsers play, with the original sound. A clip with a display rotation (a
phone's portrait clip) is drawn and encoded upright, so the annotated clip needs no rotation to be shown.

The networks saw sampled frames only; on the frames between two samples a track's box is placed on the
straight line between its two sightings (held where it was seen once), so boxes move smoothly with the
picture. Drawing follows :mod:`picmetric_core.overlays` (class colours, sizes for the shown width, labels on
a filled background that no other label hides).

Sound is copied packet for packet when MP4 can hold its codec (AAC, MP3, Opus, FLAC, AC-3, ALAC), and
re-encoded as AAC otherwise (Vorbis, PCM). The MP4 has its index first (``faststart``), so a browser starts
playing before it has the whole file.

Example:
    >>> encode_annotated(data, info, frames, line, crossings, Path("out.mp4"), limits, deadline)  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from picmetric_core.labels import percent
from picmetric_core.overlays import FACE_COLOR, _draw_box, _draw_labels, _Style, class_color
from picmetric_core.results import Box, Point
from picmetric_core.video.counting import anchor
from picmetric_core.video.encoder import BackgroundEncoder, i420_to_rgb, rgb_to_i420
from picmetric_core.video.frames import DecodedFrame, decoded_frames, stored_size, upright
from picmetric_core.video.probe import Deadline, VideoLimits, VideoSource, open_clip
from picmetric_core.video.results import CountingLine, Crossing, FrameResult, Track, VideoInfo

ANNOTATED_MAX_SIDE = 1280
"""The annotated clip's longer side at most (a 4K original is drawn and encoded at 1280 wide: ~9× cheaper)."""
X264_OPTIONS = {"preset": "ultrafast", "crf": "24"}
"""ultrafast: 720p30 at ~9 ms a frame on the 2-core machine, against ~21 ms for veryfast (docs/video.md); the clip is
a preview of the results, so speed wins over size."""
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "flac", "ac3", "eac3", "alac"})
TRAIL_S = 1.0
LINE_COLOR = (255, 255, 255)
LINE_SHADOW = (0, 0, 0)

Progress = Callable[[float], None]


@dataclass(frozen=True)
class _Shown:
    """What one output frame shows: boxes with their labels and colours, trails, faces."""

    boxes: list[tuple[Box, str, tuple[int, int, int]]]
    trails: list[tuple[list[Point], tuple[int, int, int]]]


class FrameScene:
    """The boxes, trails and counts to draw at any time of the clip, from the sampled frames' results."""

    def __init__(
        self,
        frames: Sequence[FrameResult],
        crossings: Sequence[Crossing],
        sample_fps: float,
        tracks: Sequence[Track] = (),
    ) -> None:
        self.frames = list(frames)
        self.labels = {track.track_id: track.label for track in tracks}  # a track's class, not one frame's guess
        self.times = [frame.time_s for frame in self.frames]
        self.crossings = sorted(crossings, key=lambda crossing: crossing.time_s)
        self.hold_s = 1.5 / sample_fps
        self._paths: dict[int, list[tuple[float, Point, int]]] = {}  # track -> (time, anchor, class id)
        for frame in self.frames:
            for item in frame.objects:
                if item.track_id is not None:
                    self._paths.setdefault(item.track_id, []).append((frame.time_s, anchor(item.box), item.class_id))

    def at(self, time_s: float) -> _Shown:
        """What to draw at ``time_s`` (clip pixels)."""
        position = bisect.bisect_right(self.times, time_s) - 1
        if position < 0:
            return _Shown([], [])
        before = self.frames[position]
        if time_s - before.time_s > self.hold_s:
            return _Shown([], [])
        after = self.frames[position + 1] if position + 1 < len(self.frames) else None
        progress = 0.0
        later: dict[int, Box] = {}
        if after is not None and after.time_s > before.time_s:
            progress = (time_s - before.time_s) / (after.time_s - before.time_s)
            later = {item.track_id: item.box for item in after.objects if item.track_id is not None}
        boxes = []
        for item in before.objects:
            box = item.box
            if item.track_id is not None and item.track_id in later:
                box = _between(box, later[item.track_id], progress)
            name = f"#{item.track_id} {self.labels.get(item.track_id, item.label)}" if item.track_id else item.label
            boxes.append((box, f"{name} {percent(item.score)}", class_color(item.class_id)))
        face_ids = before.face_track_ids or (None,) * len(before.faces)
        for face, track_id in zip(before.faces, face_ids, strict=False):
            if face.score >= 0.9:
                name = f"#{track_id} face" if track_id is not None else "face"
                boxes.append((face.box, f"{name} {percent(face.score)}", FACE_COLOR))
        trails = []
        for item in before.objects:
            if item.track_id is None:
                continue
            path = self._paths.get(item.track_id, [])
            points = [point for seen, point, _ in path if time_s - TRAIL_S <= seen <= time_s]
            if item.track_id in later:
                points.append(anchor(_between(item.box, later[item.track_id], progress)))
            if len(points) >= 2:
                trails.append((points, class_color(item.class_id)))
        return _Shown(boxes, trails)

    def counts_until(self, time_s: float) -> tuple[int, int]:
        """Crossings "in" and "out" up to ``time_s``."""
        done = self.crossings[: bisect.bisect_right([c.time_s for c in self.crossings], time_s)]
        return sum(c.direction == "in" for c in done), sum(c.direction == "out" for c in done)


def _between(first: Box, second: Box, progress: float) -> Box:
    def mix(a: float, b: float) -> float:
        return a + (b - a) * progress

    return Box(mix(first.x1, second.x1), mix(first.y1, second.y1), mix(first.x2, second.x2), mix(first.y2, second.y2))


def draw_scene(
    rgb: np.ndarray, shown: _Shown, scale: float, line: CountingLine | None, counts: tuple[int, int]
) -> None:
    """Draw ``shown`` (clip pixels, times ``scale`` for this frame) and the line with its counts onto ``rgb``."""
    style = _Style.for_image(rgb)

    def scaled(box: Box) -> Box:
        return Box(box.x1 * scale, box.y1 * scale, box.x2 * scale, box.y2 * scale)

    for points, color in shown.trails:
        polyline = np.array([[p.x * scale, p.y * scale] for p in points], dtype=np.int32)
        cv2.polylines(rgb, [polyline], False, color, max(1, style.thickness - 1), cv2.LINE_AA)
    for box, _, color in shown.boxes:
        _draw_box(rgb, scaled(box), color, style)
    if line is not None:
        start = (int(line.start.x * scale), int(line.start.y * scale))
        end = (int(line.end.x * scale), int(line.end.y * scale))
        cv2.line(rgb, start, end, LINE_SHADOW, style.thickness + 2, cv2.LINE_AA)
        cv2.line(rgb, start, end, LINE_COLOR, style.thickness, cv2.LINE_AA)
    labels = [(text, scaled(box), color) for box, text, color in shown.boxes]
    if line is not None:
        inward, outward = counts
        end_box = Box(end[0], end[1], end[0] + 1, end[1] + 1)
        labels.insert(0, (f"in {inward}  out {outward}", end_box, LINE_COLOR))
    if labels:
        _draw_labels(rgb, labels, style)


def output_size(width: int, height: int, side: int = ANNOTATED_MAX_SIDE) -> tuple[int, int]:
    """The annotated clip's (even) size: the original's, at most ``side`` long.

    Example:
        >>> output_size(3840, 2160), output_size(641, 361)
        ((1280, 720), (640, 360))
    """
    factor = min(1.0, side / max(width, height))
    return max(2, int(width * factor) // 2 * 2), max(2, int(height * factor) // 2 * 2)


def encode_annotated(
    source: VideoSource,
    info: VideoInfo,
    frames: Sequence[FrameResult],
    line: CountingLine | None,
    crossings: Sequence[Crossing],
    sample_fps: float,
    target: Path,
    tracks: Sequence[Track],
    limits: VideoLimits,
    deadline: Deadline,
    on_progress: Progress | None = None,
) -> None:
    """Write the annotated clip of ``source`` to ``target`` (an MP4 with H.264 video and the original's sound).

    Raises:
        VideoRejected, VideoTooLarge, VideoTimedOut: as :func:`~picmetric_core.video.frames.decoded_frames`.
    """
    import av

    scene = FrameScene(frames, crossings, sample_fps, tracks)
    width, height = output_size(info.width, info.height)
    scaled_width, scaled_height = stored_size(width, height, info.rotation)
    scale = width / info.width
    rate = Fraction(info.fps).limit_denominator(1001) if info.fps else Fraction(25)
    with av.open(str(target), mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
        video = output.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = dict(X264_OPTIONS)
        audio = _audio_stream(output, source, deadline) if info.has_audio else None
        expected = max(1.0, info.duration_s * (info.fps or 25))
        with BackgroundEncoder(output, video) as encoder:
            for item in decoded_frames(source, info, limits, deadline, audio=info.has_audio):
                if not isinstance(item, DecodedFrame):
                    audio = _mux_audio(encoder, audio, item)
                    continue
                yuv = item.frame.to_ndarray(  # type: ignore[attr-defined]
                    format="yuv420p", width=scaled_width, height=scaled_height
                )
                rgb = upright(i420_to_rgb(yuv), info.rotation)
                draw_scene(rgb, scene.at(item.time_s), scale, line, scene.counts_until(item.time_s))
                drawn = av.VideoFrame.from_ndarray(rgb_to_i420(rgb), format="yuv420p")
                drawn.pts = round(item.time_s * 90_000)
                drawn.time_base = Fraction(1, 90_000)
                encoder.put(drawn)
                if on_progress is not None and item.number % 15 == 0:
                    on_progress(min(1.0, item.number / expected))
            if audio is not None and _reencoded(audio):
                encoder.mux(audio.encode())


def _audio_stream(output, source: VideoSource, deadline: Deadline):  # type: ignore[no-untyped-def]
    """The output's sound stream, added before anything is written (a stream added later corrupts the MP4):
    a copy of the original's when MP4 can hold its codec, else AAC."""
    with open_clip(source, deadline) as container:
        original = container.streams.audio[0]
        if original.codec_context.name in MP4_AUDIO_CODECS:
            return output.add_stream_from_template(original)
        stream = output.add_stream("aac", rate=original.codec_context.sample_rate or 48_000)
        stream.layout = "mono" if original.codec_context.channels == 1 else "stereo"
        stream.format = "fltp"  # AAC's own; decoded frames of another format are resampled when encoded
        stream.metadata["reencoded"] = "1"
        return stream


def _reencoded(audio) -> bool:  # type: ignore[no-untyped-def]
    return audio.metadata.get("reencoded") == "1"


def _mux_audio(encoder: BackgroundEncoder, audio, packet):  # type: ignore[no-untyped-def]
    """Copy (or re-encode as AAC) one audio packet of the original into the output's sound stream."""
    if audio is None or packet.dts is None or packet.pts is None:
        return audio  # no sound stream, or a demuxer's flush packet
    if not _reencoded(audio):
        packet.stream = audio
        encoder.mux([packet])
        return audio
    for frame in packet.decode():
        frame.pts = None
        encoder.mux(audio.encode(frame))
    return audio
