"""The clips a History export carries: those History's video cards show for the same filter, as tracks and
detections under ``videos/<video_id>/`` in the ZIP (``tracks.csv``, ``frames.csv``, ``tracks.json``).

CSV and COCO exports stay photo tables (one row or image per photo); a clip's rows live in its own files.

Example:
    >>> clips = videos_for(service, HistoryQuery(label="dog"))  # doctest: +SKIP
    >>> write_video_files(archive, clips)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING

from picmetric_core.video import exports
from picmetric_core.video.results import StoredVideo
from picmetric_core.video.store import VideoStore

if TYPE_CHECKING:
    from picmetric_core.history import HistoryQuery
    from picmetric_core.service import PicMetricService

MAX_VIDEOS = 500
"""Clips in one export at most (each carries every sampled frame's detections)."""


def history_labels(query: HistoryQuery) -> tuple[str, ...]:
    """The labels History's filter asks for, as :meth:`VideoStore.list` takes them (none: every clip)."""
    return (query.label,) if query.label else ()


def videos_for(service: PicMetricService, query: HistoryQuery) -> list[StoredVideo]:
    """The stored clips with a track of the query's label (every clip without one), newest first, with frames."""
    store = VideoStore(service.engine, service.store)
    listed = store.list(history_labels(query), limit=MAX_VIDEOS)
    return [stored for video in listed if (stored := store.get(video.video_id)) is not None]


def write_video_files(archive: zipfile.ZipFile, videos: Sequence[StoredVideo]) -> None:
    """Each clip's ``tracks.csv``, ``frames.csv`` and ``tracks.json`` (the API's document) in ``videos/<video_id>/``."""
    for video in videos:
        folder = f"videos/{video.video_id}"
        archive.writestr(f"{folder}/tracks.csv", exports.tracks_csv(video))
        archive.writestr(f"{folder}/frames.csv", exports.frames_csv(video))
        archive.writestr(f"{folder}/tracks.json", json.dumps(exports.document(video), indent=1, default=str))
