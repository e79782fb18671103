"""A stored clip as the JSON document the API and the CLI print, and its tracks and detections as CSV.

Example:
    >>> document(stored)["tracks"][0]["label"]  # doctest: +SKIP
    'horse'
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.video.results import FrameResult, StoredVideo

TRACK_COLUMNS = (
    "video_id",
    "track_id",
    "label",
    "class_id",
    "first_seen_s",
    "last_seen_s",
    "best_score",
    "best_time_s",
    "x1",
    "y1",
    "x2",
    "y2",
    "frames",
    "crop_key",
)
FRAME_COLUMNS = ("video_id", "frame", "time_s", "kind", "track_id", "label", "score", "x1", "y1", "x2", "y2")


def timeline(frames: tuple[FrameResult, ...]) -> list[dict[str, Any]]:
    """Per sampled frame: its time, the objects shown per class (tracked, or at the display threshold), and faces.

    Example:
        >>> timeline(())
        []
    """
    rows = []
    for frame in frames:
        objects = Counter(
            item.label
            for item in frame.objects
            if item.track_id is not None or item.score >= DEFAULT_THRESHOLDS.min_detection_score
        )
        faces = sum(face.score >= DEFAULT_THRESHOLDS.min_face_score for face in frame.faces)
        rows.append({"time_s": frame.time_s, "objects": dict(sorted(objects.items())), "faces": int(faces)})
    return rows


def document(stored: StoredVideo, links: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The clip's JSON document: what it is, its tracks, the line's counts, a timeline, and links.

    Args:
        stored: The clip (its frames give the timeline; a clip from a list has none).
        links: Where its objects are (the API gives URLs); the store keys by default.
    """
    analysis = stored.analysis
    keys = stored.keys
    return {
        "kind": "video",
        "video_id": stored.video_id,
        "filename": stored.filename,
        "source": stored.source,
        "source_url": stored.source_url,
        "created_at": stored.created_at,
        "info": asdict(analysis.info),
        "sample_fps": analysis.sample_fps,
        "seconds": analysis.seconds,
        "models": [asdict(model) for model in analysis.models],
        "top_objects": [{"label": label, "tracks": count} for label, count in stored.top_objects],
        "tracks": [_plain(asdict(track)) for track in analysis.tracks],
        "line": asdict(analysis.line) if analysis.line is not None else None,
        "counts": [asdict(count) for count in analysis.counts],
        "crossings": [asdict(crossing) for crossing in analysis.crossings],
        "timeline": timeline(analysis.frames),
        "links": dict(links)
        if links is not None
        else {
            "original": keys.original,
            "annotated": keys.annotated,
            "poster": keys.poster,
            "tracks_json": keys.tracks_json,
        },
    }


def tracks_csv(stored: StoredVideo) -> bytes:
    """One row per track (objects and faces)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TRACK_COLUMNS)
    for track in stored.analysis.tracks:
        box = track.best_box
        writer.writerow(
            [
                stored.video_id,
                track.track_id,
                track.label,
                track.class_id,
                track.first_seen_s,
                track.last_seen_s,
                round(float(track.best_score), 4),
                track.best_time_s,
                *(round(float(v), 1) for v in box.as_list()),
                track.frames,
                track.crop_key or "",
            ]
        )
    return buffer.getvalue().encode()


def frames_csv(stored: StoredVideo) -> bytes:
    """One row per object or face in each sampled frame (``track_id`` empty where the tracker assigned none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(FRAME_COLUMNS)
    for frame in stored.analysis.frames:
        for item in frame.objects:
            writer.writerow(
                _frame_row(stored.video_id, frame, "object", item.track_id, item.label, item.score, item.box)
            )
        face_ids = frame.face_track_ids or (None,) * len(frame.faces)
        for face, track_id in zip(frame.faces, face_ids, strict=False):
            writer.writerow(_frame_row(stored.video_id, frame, "face", track_id, "face", face.score, face.box))
    return buffer.getvalue().encode()


def _frame_row(video_id, frame, kind, track_id, label, score, box) -> list[Any]:  # type: ignore[no-untyped-def]
    return [
        video_id,
        frame.index,
        frame.time_s,
        kind,
        "" if track_id is None else track_id,
        label,
        round(float(score), 4),
        *(round(float(v), 1) for v in box.as_list()),
    ]


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars (which networks hand back) as plain numbers, one level deep."""
    return {
        key: value.item() if hasattr(value, "item") and not isinstance(value, dict) else value
        for key, value in data.items()
    }
