"""Following objects and faces from sampled frame to sampled frame with ByteTrack (the ``trackers`` package).

:class:`VideoTracker` feeds each sampled frame's detections to one ByteTrack for objects (class-agnostic: a
car the detector calls a truck in one frame stays one track, labelled by its most frequent class) and one
for faces, and gives the results back with our own track ids, 1, 2, 3 ... in order of first confirmation
(the two trackers would otherwise both start at 1).

A detection ByteTrack did not assign (``tracker_id == -1``: a track not yet confirmed, a low-score box that
matched nothing) gets ``track_id=None``. Such detections are never gathered into a track of their own,
counted or drawn with an id: -1 is "no track", not one shared track.

Each track keeps its first and last time, best score, and a JPEG crop of its best sighting.

Example:
    >>> tracker = VideoTracker(sample_fps=5.0)  # doctest: +SKIP
    >>> objects, face_ids = tracker.update(frame, detections, faces)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from picmetric_core.nms import class_wise_nms
from picmetric_core.results import Box, Detection, Face
from picmetric_core.video.frames import SampledFrame
from picmetric_core.video.results import Track, TrackedObject

FACE_LABEL = "face"
FACE_CLASS_ID = -1
"""Faces are tracked too; their tracks carry this label and class id (COCO ids are 0–79)."""
MIN_OBJECT_SCORE = 0.1
"""Detections down to this score reach ByteTrack: its second stage uses low-score boxes to keep tracks alive."""
TRACK_OBJECT_SCORE = 0.25
"""A new object track starts only from a detection at or above this (the display default)."""
MIN_FACE_SCORE = 0.9
"""Faces below this (the display default) are not tracked."""
SAME_OBJECT_IOU = 0.6
"""Boxes of different classes overlapping this much are one object (the detector's car-or-truck doubt)."""
LOST_TRACK_S = 1.0
"""A track not seen for this long ends; an object that reappears later gets a new id."""
CROP_MAX_SIDE = 256
CROP_MARGIN = 0.1


@dataclass
class _TrackState:
    """What is known about one track so far (mutable while the clip runs)."""

    track_id: int
    first_seen_s: float
    last_seen_s: float
    best_score: float
    best_time_s: float
    best_box: Box
    best_label: str
    best_class_id: int
    frames: int = 0
    votes: Counter[tuple[str, int]] = field(default_factory=Counter)
    crop: np.ndarray | None = None

    def seen(self, time_s: float, label: str, class_id: int, score: float, box: Box, crop: np.ndarray | None) -> None:
        self.last_seen_s = time_s
        self.frames += 1
        self.votes[(label, class_id)] += 1
        if score > self.best_score:
            self.best_score, self.best_time_s, self.best_box = score, time_s, box
            self.best_label, self.best_class_id = label, class_id
            self.crop = crop

    def to_track(self) -> Track:
        best = (self.best_label, self.best_class_id)
        # The most frequent class; on a tie, the best sighting's.
        label, class_id = max(self.votes, key=lambda key: (self.votes[key], key == best))
        return Track(
            track_id=self.track_id,
            label=label,
            class_id=class_id,
            first_seen_s=self.first_seen_s,
            last_seen_s=self.last_seen_s,
            best_score=round(self.best_score, 4),
            best_time_s=self.best_time_s,
            best_box=self.best_box,
            frames=self.frames,
        )


class VideoTracker:
    """ByteTrack for objects and for faces over one clip's sampled frames, with track summaries and crops.

    Args:
        sample_fps: Sampled frames per second (ByteTrack's frame rate).
    """

    def __init__(self, sample_fps: float) -> None:
        from trackers import ByteTrackTracker

        buffer = max(1, round(LOST_TRACK_S * 30))  # ByteTrack counts its buffer in frames at 30 fps
        self._objects = ByteTrackTracker(
            lost_track_buffer=buffer,
            frame_rate=sample_fps,
            track_activation_threshold=TRACK_OBJECT_SCORE,
            high_conf_det_threshold=TRACK_OBJECT_SCORE,
            minimum_consecutive_frames=2,
            minimum_iou_threshold=0.1,
        )
        self._faces = ByteTrackTracker(
            lost_track_buffer=buffer,
            frame_rate=sample_fps,
            track_activation_threshold=MIN_FACE_SCORE,
            high_conf_det_threshold=MIN_FACE_SCORE,
            minimum_consecutive_frames=2,
            minimum_iou_threshold=0.1,
        )
        self._ids: dict[tuple[str, int], int] = {}  # (which tracker, its id) -> our id
        self._states: dict[int, _TrackState] = {}

    def update(
        self, frame: SampledFrame, detections: list[Detection], faces: list[Face]
    ) -> tuple[tuple[TrackedObject, ...], tuple[int | None, ...]]:
        """One sampled frame's detections and faces (in the clip's pixels) through the trackers.

        Returns:
            The frame's objects with their track ids (``None``: not assigned), best first; and each face's track
            id, in the order of ``faces``.
        """
        kept = self._one_box_per_object(detections)
        object_ids = self._assign(
            "objects", self._objects, [d.box for d in kept], [d.score for d in kept], frame.time_s
        )
        objects = []
        for detection, track_id in zip(kept, object_ids, strict=True):
            if track_id is not None:
                self._seen(
                    track_id, frame, detection.label, int(detection.class_id), float(detection.score), detection.box
                )
            score = float(detection.score)
            objects.append(TrackedObject(detection.label, int(detection.class_id), score, detection.box, track_id))
        tracked_faces = [face for face in faces if face.score >= MIN_FACE_SCORE]
        face_ids_kept = self._assign(
            "faces", self._faces, [f.box for f in tracked_faces], [f.score for f in tracked_faces], frame.time_s
        )
        by_face = {id(face): track_id for face, track_id in zip(tracked_faces, face_ids_kept, strict=True)}
        for face, track_id in zip(tracked_faces, face_ids_kept, strict=True):
            if track_id is not None:
                self._seen(track_id, frame, FACE_LABEL, FACE_CLASS_ID, float(face.score), face.box)
        return tuple(objects), tuple(by_face.get(id(face)) for face in faces)

    def tracks(self) -> tuple[Track, ...]:
        """Every track so far, by id."""
        return tuple(state.to_track() for _, state in sorted(self._states.items()))

    def crops(self) -> dict[int, np.ndarray]:
        """Each track's best crop (RGB), by track id."""
        return {track_id: state.crop for track_id, state in self._states.items() if state.crop is not None}

    def _one_box_per_object(self, detections: list[Detection]) -> list[Detection]:
        candidates = [d for d in detections if d.score >= MIN_OBJECT_SCORE]
        if not candidates:
            return []
        boxes = np.array([d.box.as_list() for d in candidates], dtype=np.float64)
        scores = np.array([d.score for d in candidates], dtype=np.float64)
        keep = class_wise_nms(boxes, scores, np.zeros(len(candidates), dtype=np.int64), SAME_OBJECT_IOU)
        return [candidates[i] for i in keep]

    def _assign(self, kind: str, tracker, boxes: list[Box], scores: list[float], time_s: float) -> list[int | None]:
        import supervision as sv

        xyxy = np.array([box.as_list() for box in boxes], dtype=np.float32).reshape(-1, 4)
        given = sv.Detections(
            xyxy=xyxy,
            confidence=np.array(scores, dtype=np.float32),
            class_id=np.zeros(len(boxes), dtype=int),
            data={"given": np.arange(len(boxes))},
        )
        tracked = tracker.update(given, timestamp=time_s)
        assigned: list[int | None] = [None] * len(boxes)
        if len(tracked) == 0:
            return assigned
        for position, raw_id in zip(tracked.data["given"], tracked.tracker_id, strict=True):
            if int(raw_id) < 0:
                continue  # not assigned: no track, never the shared track "-1"
            key = (kind, int(raw_id))
            if key not in self._ids:
                self._ids[key] = len(self._ids) + 1
            assigned[int(position)] = self._ids[key]
        return assigned

    def _seen(self, track_id: int, frame: SampledFrame, label: str, class_id: int, score: float, box: Box) -> None:
        state = self._states.get(track_id)
        if state is None:
            state = _TrackState(track_id, frame.time_s, frame.time_s, -1.0, frame.time_s, box, label, class_id)
            self._states[track_id] = state
        crop = crop_of(frame, box) if score > state.best_score else None
        state.seen(frame.time_s, label, class_id, score, box, crop)


def crop_of(frame: SampledFrame, box: Box) -> np.ndarray:
    """The part of a sampled frame inside ``box`` (clip pixels) with a small margin, at most :data:`CROP_MAX_SIDE`."""
    height, width = frame.rgb.shape[:2]
    margin_x, margin_y = box.width * CROP_MARGIN, box.height * CROP_MARGIN
    x1 = int(max(0, (box.x1 - margin_x) / frame.scale))
    y1 = int(max(0, (box.y1 - margin_y) / frame.scale))
    x2 = int(min(width, np.ceil((box.x2 + margin_x) / frame.scale)))
    y2 = int(min(height, np.ceil((box.y2 + margin_y) / frame.scale)))
    crop = frame.rgb[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
    longest = max(crop.shape[:2])
    if longest > CROP_MAX_SIDE:
        import cv2

        factor = CROP_MAX_SIDE / longest
        size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop).copy()
