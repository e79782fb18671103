"""Video files in a batch: recognised by their container, analysed and stored by the actor that holds the networks.

A clip never goes through the photo path (decode, ``analyze_many``, the store stage): the analyze stage hands it
to :meth:`picmetric_core.video.jobs.VideoJobs.analyze_file` with ``source="batch"``, which tracks, counts, encodes
the annotated clip and stores it, and the item is recorded ``new`` (or ``seen`` when it was stored before) or
``failed`` with the clip's own message, like a photo. A URL item that starts like a clip is fetched under the
video byte limit (:func:`picmetric_core.batch.sources.read_item`) and analysed the same way, its address kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from picmetric_core.errors import DatabaseUnavailable, PicMetricError, StoreUnavailable
from picmetric_core.video.probe import sniff_container

if TYPE_CHECKING:
    from picmetric_core.config import Settings
    from picmetric_core.service import PicMetricService
    from picmetric_core.video.jobs import VideoJobs

log = logging.getLogger(__name__)

VIDEO = "video"
"""An item's status between the decode stage and the analyze stage when it is a clip."""
UNEXPECTED = "Unexpected error on this video; it has been logged on the worker."


def looks_like_video(data: bytes) -> bool:
    """Whether the bytes start like a supported video container (the name is not looked at)."""
    return sniff_container(bytes(data[:16])) is not None


@dataclass(frozen=True)
class VideoOutcome:
    """What became of one clip: ``new``, ``seen`` or ``failed`` (with the message for the job's failures)."""

    status: str
    error: str = ""


def analyse_video(videos: VideoJobs, data: bytes, filename: str, source_url: str | None = None) -> VideoOutcome:
    """Analyse and store one clip of a batch (``source_url``: the address of a URL item, kept with the clip).

    Raises:
        StoreUnavailable, DatabaseUnavailable: not the item's fault; the run stops and a resumed job retries it.
    """
    from picmetric_core.video.jobs import md5_of

    try:
        seen = videos.store().find(md5_of(data)) is not None
        videos.analyze_file(data, filename, source="batch", source_url=source_url)
    except (StoreUnavailable, DatabaseUnavailable):
        raise
    except PicMetricError as error:
        return VideoOutcome("failed", str(error))
    except Exception:
        log.exception("analysing the video %s failed", filename)
        return VideoOutcome("failed", UNEXPECTED)
    return VideoOutcome("seen" if seen else "new")


def video_jobs(settings: Settings, service: PicMetricService, analyzer: Any) -> VideoJobs:
    """Video analyses on the actor's own networks and the worker's service (its database and store)."""
    from picmetric_core.lifecycle import ModelLoader
    from picmetric_core.video.jobs import VideoJobs

    return VideoJobs(settings, lambda: service, ModelLoader(settings, load=lambda _settings: analyzer))
