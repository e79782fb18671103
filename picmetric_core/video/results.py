"""Typed results of a video analysis: what the engine produces, the store keeps, the API and pages show.

Coordinates are pixels of the clip's frames (display orientation), origin top-left; times are seconds
from the start of the clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from picmetric_core.results import Box, Classification, Face, ModelInfo, Point

JobState = Literal["queued", "running", "done", "failed"]
Direction = Literal["in", "out"]


@dataclass(frozen=True)
class VideoInfo:
    """What the container and its video stream declare (checked against the limits before decoding).

    ``width`` and ``height`` are the frame's as shown: a phone's portrait clip, stored landscape with a display
    rotation of 90 or 270 degrees, is as tall as it is shown.
    """

    duration_s: float
    fps: float
    width: int
    height: int
    codec: str  # e.g. "h264", "hevc", "vp9", "av1"
    container: str  # e.g. "mp4", "webm", "matroska"
    frame_count: int | None  # declared, when the container says
    has_audio: bool
    rotation: int = 0  # degrees counter-clockwise the stored frames are turned to be shown upright (0/90/180/270)


@dataclass(frozen=True)
class CountingLine:
    """A line across the frame, from ``start`` to ``end``; crossing it left-to-right of that direction is "in"."""

    start: Point
    end: Point


@dataclass(frozen=True)
class TrackedObject:
    """One detection in one sampled frame, with the tracker's id (``None`` when the tracker did not assign one)."""

    label: str
    class_id: int
    score: float
    box: Box
    track_id: int | None


@dataclass(frozen=True)
class FrameResult:
    """What was found in one sampled frame."""

    index: int  # sampled-frame number, 0-based
    time_s: float
    objects: tuple[TrackedObject, ...]
    faces: tuple[Face, ...]
    classes: tuple[Classification, ...] = ()  # only on frames where the classifier ran
    face_track_ids: tuple[int | None, ...] = ()  # each face's track id (None: not assigned), in the order of faces


@dataclass(frozen=True)
class Track:
    """One object followed across frames."""

    track_id: int
    label: str
    class_id: int
    first_seen_s: float
    last_seen_s: float
    best_score: float
    best_time_s: float
    best_box: Box
    frames: int  # sampled frames it was seen in
    crop_key: str | None = None  # the store key of its best crop (JPEG), once stored


@dataclass(frozen=True)
class Crossing:
    track_id: int
    label: str
    time_s: float
    direction: Direction


@dataclass(frozen=True)
class LineCount:
    """Crossings of the counting line by one class."""

    label: str
    inward: int
    outward: int


@dataclass(frozen=True)
class VideoAnalysis:
    """The whole result of one clip."""

    info: VideoInfo
    sample_fps: float
    frames: tuple[FrameResult, ...]
    tracks: tuple[Track, ...]
    line: CountingLine | None
    crossings: tuple[Crossing, ...]
    counts: tuple[LineCount, ...]
    models: tuple[ModelInfo, ...]
    seconds: float  # wall time of the analysis


@dataclass(frozen=True)
class VideoKeys:
    """Where a clip's parts are in the object store."""

    original: str
    annotated: str | None
    poster: str
    tracks_json: str


@dataclass(frozen=True)
class StoredVideo:
    """A video analysis as kept in the database and the store."""

    video_id: str  # md5 of the original file
    filename: str
    source: Literal["upload", "url", "batch"]
    source_url: str | None
    created_at: str  # ISO 8601, UTC
    analysis: VideoAnalysis
    keys: VideoKeys
    top_objects: tuple[tuple[str, int], ...] = ()  # (label, tracks), most first


@dataclass(frozen=True)
class VideoJob:
    """A video analysis running or done; ``partial`` holds the frames found so far while it runs."""

    job_id: str
    state: JobState
    filename: str
    progress: float  # 0..1 of the sampled frames
    stage: str  # e.g. "probing", "analysing", "encoding", "storing"
    error: str | None = None  # a message for the user (never a path or a trace)
    video_id: str | None = None  # when done
    partial: tuple[FrameResult, ...] = field(default=())
