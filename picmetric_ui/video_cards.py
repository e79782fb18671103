"""Video cards: a clip's poster, name, length and top objects, with a link that opens it on the Video page.

History shows them beside the photos, filtered by the same label; the Video page lists the latest.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import streamlit as st
from PIL import Image, ImageOps

from picmetric_core.history import HistoryQuery
from picmetric_core.video.history_export import history_labels
from picmetric_core.video.results import StoredVideo
from picmetric_ui import plain, resources
from picmetric_ui.thumbnails import BACKDROP, CARD_SIZE, jpeg_of
from picmetric_ui.video_data import card_text

if TYPE_CHECKING:
    from picmetric_core.video.jobs import VideoJobs

log = logging.getLogger(__name__)

VIDEO_PAGE = "pages/4_Video.py"
CARD_PX = 220
HISTORY_CARDS = 8
TTL_S = 30


def videos() -> VideoJobs:
    """The server's video jobs and stored videos (one per runtime)."""
    return resources.runtime().videos()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _listed(settings_key: str, labels: tuple[str, ...], limit: int) -> list[StoredVideo]:
    return videos().list(labels=labels, limit=limit)


def listed(labels: tuple[str, ...] = (), limit: int = HISTORY_CARDS) -> list[StoredVideo]:
    """The newest stored videos showing any of ``labels`` (all when empty), read at most every 30 s."""
    return _listed(resources.settings_key(resources.settings()), labels, limit)


@st.cache_data(ttl=600, max_entries=256, show_spinner=False)
def _poster_card(settings_key: str, key: str) -> bytes:
    poster = Image.open(io.BytesIO(videos().read(key))).convert("RGB")
    return jpeg_of(ImageOps.pad(poster, CARD_SIZE, color=BACKDROP))


def poster_card(key: str) -> bytes:
    """The clip's poster letterboxed to the photo cards' 4:3; a blank card when it cannot be read (logged)."""
    try:
        return _poster_card(resources.settings_key(resources.settings()), key)
    except Exception:  # a missing poster must not take the gallery down
        log.exception("poster %s could not be read", key)
    return jpeg_of(Image.new("RGB", CARD_SIZE, BACKDROP))


def clear() -> None:
    """Forget the cached lists (after a new video is stored)."""
    _listed.clear()


def video_card(video: StoredVideo) -> None:
    """One card: poster, file name, when · how long · top objects, and "Open" (the Video page with ``?video=``)."""
    st.image(poster_card(video.keys.poster), width="stretch")
    plain.line(video.filename or video.video_id[:12], bold=True)
    plain.line(card_text(video), muted=True)
    st.page_link(
        VIDEO_PAGE,
        label="Open",
        icon=":material/play_circle:",
        query_params={"video": video.video_id},
        width="stretch",
    )


def video_cards(found: list[StoredVideo], key: str) -> None:
    """Cards of one width that wrap: five or six a row on a laptop, one or two on a phone."""
    with st.container(horizontal=True, gap="small", key=key):
        for video in found:
            with st.container(border=True, width=CARD_PX, height="stretch"):
                video_card(video)


def history_videos(query: HistoryQuery) -> None:
    """History's video cards: the newest clips showing the filter's label (nothing when none does, or
    when the videos cannot be read: that is logged, and the photos still show)."""
    try:
        found = listed(history_labels(query))
    except Exception:
        log.exception("the video cards could not be read")
        return
    if not found:
        return
    label = f" showing {query.label}" if query.label else ""
    st.subheader(f"Videos{label}")
    video_cards(found, key="history-videos")
    st.subheader("Photos")
