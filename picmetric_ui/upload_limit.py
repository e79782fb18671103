"""Streamlit's upload limit follows the configured byte limit (``PICMETRIC_MAX_BYTES``).

``.streamlit/config.toml`` names no limit: ``bootstrap.sh app`` starts Streamlit with
``--server.maxUploadSize`` from :func:`upload_limit_mb` (``python -m picmetric_ui.serving`` prints it).
Started any other way, the upload box states (:func:`widget_limit_mb`) and the page enforces
whichever of the two limits is smaller.
"""

from __future__ import annotations

import math

import streamlit as st

from picmetric_core.config import Settings

_MB = 1024 * 1024  # Streamlit's "MB" in server.maxUploadSize


def upload_limit_mb(settings: Settings) -> int:
    """The smallest whole number of Streamlit megabytes that lets every allowed image through."""
    return max(1, math.ceil(settings.max_image_bytes / _MB))


def effective_max_bytes(settings: Settings) -> int:
    """The largest upload the page accepts: the configured limit, unless Streamlit was started with less."""
    return min(settings.max_image_bytes, int(st.get_option("server.maxUploadSize")) * _MB)


def widget_limit_mb(settings: Settings) -> int:
    """The limit the upload box states and the browser applies, in Streamlit megabytes."""
    return max(1, math.ceil(effective_max_bytes(settings) / _MB))
