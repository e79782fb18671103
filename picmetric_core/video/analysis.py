"""One clip through the engine: probe, sample, detector + faces (batched), classifier now and then, tracking,
line counting, and the annotated clip.

Two passes over the file, each streaming one decoded frame at a time: the first samples frames for the
networks, the second draws every frame and encodes the annotated clip (decoding twice costs ~1 s a minute of
720p here, far less than holding frames between the passes). Memory therefore does not grow with the clip's
length, only the per-frame results (a few hundred bytes a sampled frame) and one crop per track do.

Example:
    >>> clip = analyze_clip(Path("clip.mp4"), analyzer, limits, ClipOptions(sample_fps=5.0))  # doctest: +SKIP
    >>> [(t.track_id, t.label) for t in clip.analysis.tracks]  # doctest: +SKIP
    [(1, 'dog')]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from picmetric_core.live.drawing import scaled_results
from picmetric_core.models.base import Classifier, Detector, FaceDetector
from picmetric_core.results import RAW_FACE_SCORE, Classification
from picmetric_core.video.annotate import encode_annotated
from picmetric_core.video.counting import count_crossings
from picmetric_core.video.frames import SampledFrame, expected_samples, frame_at, sampled_frames
from picmetric_core.video.probe import Deadline, VideoLimits, VideoSource, probe
from picmetric_core.video.results import CountingLine, FrameResult, VideoAnalysis, VideoInfo
from picmetric_core.video.tracking import TRACK_OBJECT_SCORE, VideoTracker

BATCH = 4
"""Sampled frames given to each network at once."""
DETECTION_NMS_IOU = 0.45
CLASSIFY_EVERY_S = 1.0
"""The classifier's cadence (it also runs at a scene cut)."""
SCENE_CUT = 40.0
"""Mean absolute difference (0–255) of two sampled frames' 32×18 grey thumbnails above which a scene cut is assumed."""
POSTER_AT_S = 1.0
ANALYSIS_SHARE = 0.7
"""Of an analysis's progress, the part that sampling and the networks take (encoding the rest)."""

FrameCallback = Callable[[FrameResult], None]
StageCallback = Callable[[str, float], None]
"""Told the stage (``"analysing"``, ``"encoding"``) and the progress of the whole analysis, 0 to 1."""


class VideoNetworks(Protocol):
    """The networks a clip needs; :class:`~picmetric_core.pipeline.Analyzer` has them."""

    classifier: Classifier
    detector: Detector
    faces: FaceDetector

    @property
    def models(self) -> tuple: ...


@dataclass(frozen=True)
class ClipOptions:
    """What the person chose: the sampling rate and, optionally, a counting line (clip pixels)."""

    sample_fps: float = 5.0
    line: CountingLine | None = None


@dataclass(frozen=True)
class AnalysedClip:
    """An analysis, its poster frame (full-size RGB), each track's best crop (RGB), and seconds per stage."""

    analysis: VideoAnalysis
    poster: np.ndarray = field(repr=False)
    crops: dict[int, np.ndarray] = field(repr=False)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def analyze_clip(
    source: VideoSource,
    networks: VideoNetworks,
    limits: VideoLimits,
    options: ClipOptions,
    *,
    annotated: Path | None = None,
    deadline: Deadline | None = None,
    on_frame: FrameCallback | None = None,
    on_stage: StageCallback | None = None,
) -> AnalysedClip:
    """Analyse a clip; with ``annotated``, also write the annotated MP4 there.

    Args:
        source: The clip's bytes or file.
        networks: Detector, faces and classifier, loaded.
        limits: Bytes, length, frame size, and the deadline for the whole analysis.
        options: The sampling rate and the counting line.
        annotated: Where to write the annotated clip (not written when ``None``).
        deadline: The analysis's deadline, when the caller started it earlier (a job that waited for the networks).
        on_frame: Told each sampled frame's result as soon as it is known (for results as they come).
        on_stage: Told the stage and the progress, 0 to 1.

    Raises:
        VideoRejected, VideoTooLarge, VideoTimedOut: a clip that is not one we analyse, with the reason.
    """
    started = time.perf_counter()
    deadline = deadline or Deadline(limits.deadline_s)
    report = on_stage or (lambda _stage, _progress: None)
    report("probing", 0.0)
    info = probe(source, limits, deadline)
    seconds: dict[str, float] = {}
    frames = _analyse_frames(source, info, networks, limits, options, deadline, on_frame, report, seconds)
    tracker_results = frames.tracker
    tracks = tracker_results.tracks()
    crossings, counts = ((), ())
    if options.line is not None:
        crossings, counts = count_crossings(options.line, frames.results, tracks)
    timer = time.perf_counter()
    poster = frame_at(source, info, POSTER_AT_S, limits, deadline)
    seconds["poster"] = time.perf_counter() - timer
    if annotated is not None:
        timer = time.perf_counter()
        report("encoding", ANALYSIS_SHARE)
        encode_annotated(
            source,
            info,
            frames.results,
            options.line,
            crossings,
            options.sample_fps,
            annotated,
            tracks,
            limits,
            deadline,
            on_progress=lambda done: report("encoding", ANALYSIS_SHARE + (1 - ANALYSIS_SHARE) * done),
        )
        seconds["encoding"] = time.perf_counter() - timer
    analysis = VideoAnalysis(
        info=info,
        sample_fps=options.sample_fps,
        frames=tuple(frames.results),
        tracks=tracks,
        line=options.line,
        crossings=crossings,
        counts=counts,
        models=tuple(networks.models),
        seconds=round(time.perf_counter() - started, 3),
    )
    seconds["total"] = analysis.seconds
    return AnalysedClip(analysis, poster, tracker_results.crops(), {k: round(v, 3) for k, v in seconds.items()})


@dataclass
class _Frames:
    results: list[FrameResult]
    tracker: VideoTracker


def _analyse_frames(
    source: VideoSource,
    info: VideoInfo,
    networks: VideoNetworks,
    limits: VideoLimits,
    options: ClipOptions,
    deadline: Deadline,
    on_frame: FrameCallback | None,
    report: StageCallback,
    seconds: dict[str, float],
) -> _Frames:
    tracker = VideoTracker(options.sample_fps)
    results: list[FrameResult] = []
    expected = expected_samples(info, options.sample_fps)
    batch: list[SampledFrame] = []
    classifier = _ClassifierCadence(networks.classifier)

    def run(batch: list[SampledFrame]) -> None:
        timer = time.perf_counter()
        rgbs = [frame.rgb for frame in batch]
        found = networks.detector.detect_batch(rgbs, score_threshold=0.1, iou_threshold=DETECTION_NMS_IOU)
        _add(seconds, "detector", timer)
        timer = time.perf_counter()
        faces_found = networks.faces.detect_faces_batch(rgbs, min_confidence=RAW_FACE_SCORE)
        _add(seconds, "faces", timer)
        for frame, detections, faces in zip(batch, found, faces_found, strict=True):
            deadline.check()
            timer = time.perf_counter()
            classes = classifier.maybe(frame)
            _add(seconds, "classifier", timer)
            timer = time.perf_counter()
            detections, faces = scaled_results(detections, faces, frame.scale)
            objects, face_ids = tracker.update(frame, detections, faces)
            shown = tuple(o for o in objects if o.track_id is not None or o.score >= TRACK_OBJECT_SCORE)
            result = FrameResult(frame.index, frame.time_s, shown, tuple(faces), classes, face_ids)
            _add(seconds, "tracking", timer)
            results.append(result)
            if on_frame is not None:
                on_frame(result)
        report("analysing", ANALYSIS_SHARE * min(1.0, len(results) / expected))

    report("analysing", 0.0)
    timer = time.perf_counter()
    decode_start = timer
    network_seconds = 0.0
    for frame in sampled_frames(source, info, options.sample_fps, limits, deadline):
        batch.append(frame)
        if len(batch) == BATCH:
            before = time.perf_counter()
            run(batch)
            network_seconds += time.perf_counter() - before
            batch = []
    if batch:
        before = time.perf_counter()
        run(batch)
        network_seconds += time.perf_counter() - before
    seconds["decoding"] = time.perf_counter() - decode_start - network_seconds
    return _Frames(results, tracker)


def _add(seconds: dict[str, float], stage: str, since: float) -> None:
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - since


class _ClassifierCadence:
    """Runs the classifier on a sampled frame once a second, and at a scene cut."""

    def __init__(self, classifier: Classifier) -> None:
        self._classifier = classifier
        self._last_time: float | None = None
        self._last_thumb: np.ndarray | None = None

    def maybe(self, frame: SampledFrame) -> tuple[Classification, ...]:
        thumb = cv2.resize(cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2GRAY), (32, 18), interpolation=cv2.INTER_AREA)
        cut = (
            self._last_thumb is not None and float(np.abs(thumb.astype(np.int16) - self._last_thumb).mean()) > SCENE_CUT
        )
        self._last_thumb = thumb.astype(np.int16)
        due = self._last_time is None or frame.time_s - self._last_time >= CLASSIFY_EVERY_S - 1e-6
        if not (due or cut):
            return ()
        self._last_time = frame.time_s
        return tuple(self._classifier.classify(frame.rgb, top_k=5))
