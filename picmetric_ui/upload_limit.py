"""Streamlit's upload limits follow the configured byte limits (``PICMETRIC_MAX_BYTES`` for photos,
``PICMETRIC_VIDEO_MAX_BYTES`` for clips).

``.streamlit/config.toml`` names no limit: ``bootstrap.sh app`` starts Streamlit with
``--server.maxUploadSize`` from :func:`upload_limit_mb`, the larger of the two, since the server has one
limit for every upload (``python -m picmetric_ui.serving`` prints it). Each upload box then states and has the
browser apply its own limit: the photo box :func:`widget_limit_mb` (the image limit, or the server's when
Streamlit was started with less), the Video page's box the video limit; a photo that reaches the server
anyway is refused by the image intake with its size and the limit.
"""

from __future__ import annotations

import math

import streamlit as st

from picmetric_core.config import Settings

_MB = 1024 * 1024  # Streamlit's "MB" in server.maxUploadSize


def upload_limit_mb(settings: Settings) -> int:
    """The server's limit: the smallest whole number of Streamlit megabytes that lets every allowed image and
    every allowed clip through."""
    return max(1, math.ceil(max(settings.max_image_bytes, settings.video_max_bytes) / _MB))


def effective_max_bytes(settings: Settings) -> int:
    """The largest photo the page accepts: the image limit, unless Streamlit was started with less."""
    return min(settings.max_image_bytes, int(st.get_option("server.maxUploadSize")) * _MB)


def widget_limit_mb(settings: Settings) -> int:
    """The limit the upload box states and the browser applies, in Streamlit megabytes."""
    return max(1, math.ceil(effective_max_bytes(settings) / _MB))
