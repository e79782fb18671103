"""Keeping analysed clips: objects in the service's store, one row (and its tracks) in the database.

Keys, under the clip's md5 (``video_id``)::

    videos/<md5>/original.<ext>                 the file as it came in
    videos/<md5>/<run>/annotated.mp4            the annotated clip (H.264, original sound)
    videos/<md5>/<run>/poster.jpg               the frame ~1 s in
    videos/<md5>/<run>/tracks.json              the whole analysis (frames, tracks, crossings): :func:`analysis_to_dict`
    videos/<md5>/<run>/crops/<track>.jpg        each track's best crop

``<run>`` is new for every analysis, so two analyses of one clip (another counting line) never write the
same key, and removing one's objects never touches the other's.

Write order ("nothing half-stored"): every object first, then the row and its tracks in one transaction.
A failed object write removes the objects written so far; a failed database write removes all of them (the
original too, unless a row of the clip is there). A new analysis of a stored clip replaces its row in one
transaction, and only then are the old run's objects removed.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, delete, exists, select
from sqlalchemy.orm import selectinload

from picmetric_core.errors import StoreUnavailable
from picmetric_core.overlays import encode_jpeg
from picmetric_core.results import Box, Classification, Face, ModelInfo, Point
from picmetric_core.store.database import database_errors, session_factory
from picmetric_core.store.objects import ObjectNotFound, ObjectStore
from picmetric_core.store.orm import VideoRow, VideoTrackRow, utc_now
from picmetric_core.video import selection
from picmetric_core.video.analysis import AnalysedClip
from picmetric_core.video.results import (
    CountingLine,
    Crossing,
    FrameResult,
    LineCount,
    StoredVideo,
    Track,
    TrackedObject,
    VideoAnalysis,
    VideoInfo,
    VideoKeys,
)

if TYPE_CHECKING:
    from picmetric_core.history import HistoryQuery

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "jpg": "image/jpeg",
    "json": "application/json",
}


def original_extension(container: str, filename: str | None) -> str:
    """The original's extension from its container (and, to tell WebM from MKV or MOV from MP4, its name).

    Example:
        >>> original_extension("matroska", "clip.webm"), original_extension("matroska", None)
        ('webm', 'mkv')
    """
    suffix = Path(filename or "").suffix.lower().lstrip(".")
    if container in ("mov", "mp4"):
        return "mov" if suffix == "mov" else "mp4"
    if container == "matroska":
        return "webm" if suffix == "webm" else "mkv"
    return "avi" if container == "avi" else "bin"


def content_type_of(key: str) -> str:
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")


@dataclass(frozen=True)
class Parameters:
    """What an analysis of a clip was asked for: the same clip with the same parameters is analysed once."""

    sample_fps: float
    line: CountingLine | None

    def matches(self, row: VideoRow) -> bool:
        return abs(row.sample_fps - self.sample_fps) < 1e-6 and row.line == _line_dict(self.line)


class VideoStore:
    """Clips' objects and rows. Thread-safe.

    Args:
        engine: The service's database.
        store: The service's object store.
    """

    def __init__(self, engine: Engine, store: ObjectStore) -> None:
        self.engine = engine
        self.store = store
        self._sessions = session_factory(engine)

    def find(self, video_id: str) -> VideoRow | None:
        """The row of a clip (with its tracks), or ``None``."""
        with database_errors(self.engine), self._sessions() as session:
            return session.scalar(
                select(VideoRow).options(selectinload(VideoRow.tracks)).where(VideoRow.md5 == video_id)
            )

    def get(self, video_id: str) -> StoredVideo | None:
        """A stored clip with its whole analysis (per-frame results read from the store)."""
        row = self.find(video_id)
        if row is None:
            return None
        document = json.loads(self.store.get(row.tracks_key))
        rotation = document.get("info", {}).get("rotation", 0)  # not a column: the row keeps the size as shown
        return stored_video(row, frames=frames_from_dicts(document.get("frames", [])), rotation=rotation)

    def list(self, labels: Sequence[str] = (), limit: int = 50, offset: int = 0) -> list[StoredVideo]:
        """Stored clips, newest first; with ``labels``, those with a track of any of these classes. No frames."""
        query = select(VideoRow).options(selectinload(VideoRow.tracks))
        if labels:
            query = query.where(
                exists().where(VideoTrackRow.video_id == VideoRow.id, VideoTrackRow.label.in_(list(labels)))
            )
        query = query.order_by(VideoRow.created_at.desc(), VideoRow.id.desc()).limit(limit).offset(offset)
        with database_errors(self.engine), self._sessions() as session:
            return [stored_video(row) for row in session.scalars(query)]

    def matching(self, query: HistoryQuery) -> list[str]:
        """The ``video_id`` of every clip ``query``'s filters select (:mod:`picmetric_core.video.selection`),
        oldest first; none when a filter is one clips do not have."""
        if not selection.judged(query):
            return []
        statement = select(VideoRow.md5).where(*selection.conditions(query))
        with database_errors(self.engine), self._sessions() as session:
            return list(session.scalars(statement.order_by(VideoRow.created_at, VideoRow.id)))

    def read(self, key: str) -> bytes:
        """An object's bytes (only keys of clips). Raises ``ObjectNotFound``, ``StoreUnavailable``."""
        if not key.startswith("videos/"):
            raise ObjectNotFound(key)
        return self.store.get(key)

    def save(
        self,
        video_id: str,
        source: bytes | Path,
        *,
        filename: str | None,
        origin: str,
        source_url: str | None,
        clip: AnalysedClip,
        annotated: Path | None,
    ) -> StoredVideo:
        """Store a clip's objects, then its row in one transaction (replacing an earlier analysis of the clip).

        Raises:
            StoreUnavailable, DatabaseUnavailable: nothing of this analysis was kept.
        """
        analysis = clip.analysis
        run = f"videos/{video_id}/{secrets.token_hex(4)}"
        keys = VideoKeys(
            original=f"videos/{video_id}/original.{original_extension(analysis.info.container, filename)}",
            annotated=f"{run}/annotated.mp4" if annotated is not None else None,
            poster=f"{run}/poster.jpg",
            tracks_json=f"{run}/tracks.json",
        )
        crop_keys = {track_id: f"{run}/crops/{track_id}.jpg" for track_id in clip.crops}
        tracks = tuple(_with_crop(track, crop_keys.get(track.track_id)) for track in analysis.tracks)
        analysis = _replace_tracks(analysis, tracks)
        written: list[str] = []
        try:
            self._put(keys.original, source if isinstance(source, bytes) else source.read_bytes(), written)
            if annotated is not None and keys.annotated is not None:
                self._put(keys.annotated, annotated.read_bytes(), written)
            self._put(keys.poster, encode_jpeg(clip.poster, quality=88), written)
            for track_id, crop in clip.crops.items():
                self._put(crop_keys[track_id], encode_jpeg(np.ascontiguousarray(crop), quality=88), written)
            self._put(keys.tracks_json, analysis_json(analysis), written)
        except BaseException:
            self._remove(written, keep_original=self.find(video_id) is not None)
            raise
        try:
            row, replaced = self._write_row(video_id, analysis, keys, filename, origin, source_url, source)
        except BaseException:
            keep = False
            with suppress(Exception):
                keep = self.find(video_id) is not None
            self._remove(written, keep_original=keep)
            raise
        if replaced:
            self._remove(replaced, keep_original=True)
        return stored_video(row, frames=analysis.frames, rotation=analysis.info.rotation)

    def delete(self, video_id: str) -> bool:
        """Delete a clip's row (its tracks with it), then its objects. ``False`` when there was none.

        Raises:
            StoreUnavailable: the store is down; checked before the row goes, so nothing was deleted.
            DatabaseUnavailable: nothing was deleted.
        """
        row = self.find(video_id)
        if row is None:
            return False
        self.store.exists(row.tracks_key)  # a store that is down fails here, before the row goes
        with database_errors(self.engine), self._sessions.begin() as session:
            deleted = session.execute(delete(VideoRow).where(VideoRow.md5 == video_id)).rowcount
        if deleted:
            self._remove(_row_keys(row), keep_original=False)
        return bool(deleted)

    def _put(self, key: str, data: bytes, written: list[str]) -> None:
        self.store.put(key, data, content_type_of(key))
        written.append(key)

    def _remove(self, keys: Sequence[str], *, keep_original: bool) -> None:
        doomed = [key for key in keys if not (keep_original and "/original." in key)]
        try:
            failed = self.store.delete_many(doomed)
        except StoreUnavailable:
            log.warning("could not remove %d objects of a video from the store", len(doomed))
            return
        if failed:
            log.warning("could not remove %s from the store", ", ".join(failed))

    def _write_row(
        self,
        video_id: str,
        analysis: VideoAnalysis,
        keys: VideoKeys,
        filename: str | None,
        origin: str,
        source_url: str | None,
        source: bytes | Path,
    ) -> tuple[VideoRow, list[str]]:
        columns = _columns(analysis, keys) | {
            "filename": filename,
            "source": origin,
            "source_url": source_url,
            "byte_size": len(source) if isinstance(source, bytes) else source.stat().st_size,
        }
        track_rows = [_track_row(track) for track in analysis.tracks]
        with database_errors(self.engine), self._sessions.begin() as session:
            row = session.scalar(
                select(VideoRow).options(selectinload(VideoRow.tracks)).where(VideoRow.md5 == video_id)
            )
            replaced: list[str] = []
            if row is None:
                row = VideoRow(md5=video_id, created_at=utc_now(), tracks=track_rows, **columns)
                session.add(row)
            else:
                replaced = [key for key in _row_keys(row) if "/original." not in key]
                for name, value in columns.items():
                    setattr(row, name, value)
                row.created_at = utc_now()
                row.tracks = track_rows
            session.flush()
        return row, replaced


def _row_keys(row: VideoRow) -> list[str]:
    keys = [row.original_key, row.poster_key, row.tracks_key]
    keys += [row.annotated_key] if row.annotated_key else []
    keys += [track.crop_key for track in row.tracks if track.crop_key]
    return keys


def _columns(analysis: VideoAnalysis, keys: VideoKeys) -> dict[str, Any]:
    info = analysis.info
    return {
        "container": info.container[:32],
        "codec": info.codec[:32],
        "duration_s": info.duration_s,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "frame_count": info.frame_count,
        "has_audio": info.has_audio,
        "sample_fps": analysis.sample_fps,
        "line": _line_dict(analysis.line),
        "crossings": [asdict(crossing) for crossing in analysis.crossings],
        "counts": [asdict(count) for count in analysis.counts],
        "models": [asdict(model) for model in analysis.models],
        "seconds": analysis.seconds,
        "original_key": keys.original,
        "annotated_key": keys.annotated,
        "poster_key": keys.poster,
        "tracks_key": keys.tracks_json,
    }


def _line_dict(line: CountingLine | None) -> dict[str, Any] | None:
    return asdict(line) if line is not None else None


def _track_row(track: Track) -> VideoTrackRow:
    return VideoTrackRow(
        track_id=track.track_id,
        label=track.label,
        class_id=track.class_id,
        first_seen_s=track.first_seen_s,
        last_seen_s=track.last_seen_s,
        best_score=float(track.best_score),
        best_time_s=track.best_time_s,
        x1=float(track.best_box.x1),
        y1=float(track.best_box.y1),
        x2=float(track.best_box.x2),
        y2=float(track.best_box.y2),
        frames=track.frames,
        crop_key=track.crop_key,
    )


def _with_crop(track: Track, key: str | None) -> Track:
    return replace(track, crop_key=key)


def _replace_tracks(analysis: VideoAnalysis, tracks: tuple[Track, ...]) -> VideoAnalysis:
    return replace(analysis, tracks=tracks)


def stored_video(row: VideoRow, frames: tuple[FrameResult, ...] = (), rotation: int = 0) -> StoredVideo:
    """The typed clip a row holds (``frames`` and the display ``rotation`` from its tracks JSON, when read)."""
    tracks = tuple(
        Track(
            track_id=t.track_id,
            label=t.label,
            class_id=t.class_id,
            first_seen_s=t.first_seen_s,
            last_seen_s=t.last_seen_s,
            best_score=t.best_score,
            best_time_s=t.best_time_s,
            best_box=t.box,
            frames=t.frames,
            crop_key=t.crop_key,
        )
        for t in row.tracks
    )
    line = row.line
    analysis = VideoAnalysis(
        info=VideoInfo(
            duration_s=row.duration_s,
            fps=row.fps,
            width=row.width,
            height=row.height,
            codec=row.codec,
            container=row.container,
            frame_count=row.frame_count,
            has_audio=row.has_audio,
            rotation=rotation,
        ),
        sample_fps=row.sample_fps,
        frames=frames,
        tracks=tracks,
        line=CountingLine(Point(**line["start"]), Point(**line["end"])) if line else None,
        crossings=tuple(Crossing(**c) for c in row.crossings),
        counts=tuple(LineCount(**c) for c in row.counts),
        models=tuple(ModelInfo(**m) for m in row.models),
        seconds=row.seconds,
    )
    by_label: dict[str, int] = {}
    for track in tracks:
        by_label[track.label] = by_label.get(track.label, 0) + 1
    top = tuple(sorted(by_label.items(), key=lambda item: (-item[1], item[0])))
    return StoredVideo(
        video_id=row.md5,
        filename=row.filename or "",
        source=row.source,  # type: ignore[arg-type]
        source_url=row.source_url,
        created_at=row.created_at.astimezone(UTC).isoformat(),
        analysis=analysis,
        keys=VideoKeys(row.original_key, row.annotated_key, row.poster_key, row.tracks_key),
        top_objects=top,
    )


def analysis_to_dict(analysis: VideoAnalysis) -> dict[str, Any]:
    """The whole analysis as plain data (what ``tracks.json`` holds; numbers may still be numpy scalars)."""
    return asdict(analysis)


def analysis_json(analysis: VideoAnalysis) -> bytes:
    """:func:`analysis_to_dict` as JSON bytes (numpy scalars, which the networks hand back, as plain numbers)."""
    return json.dumps(analysis_to_dict(analysis), default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def frames_from_dicts(frames: Sequence[dict[str, Any]]) -> tuple[FrameResult, ...]:
    """The per-frame results of :func:`analysis_to_dict`'s ``frames``, typed again."""
    return tuple(
        FrameResult(
            index=f["index"],
            time_s=f["time_s"],
            objects=tuple(
                TrackedObject(o["label"], o["class_id"], o["score"], Box(**o["box"]), o["track_id"])
                for o in f["objects"]
            ),
            faces=tuple(
                Face(x["score"], Box(**x["box"]), {k: Point(**p) for k, p in x["landmarks"].items()})
                for x in f["faces"]
            ),
            classes=tuple(Classification(**c) for c in f.get("classes", [])),
            face_track_ids=tuple(f.get("face_track_ids", [])),
        )
        for f in frames
    )
