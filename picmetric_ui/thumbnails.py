"""Gallery thumbnails of one shape (4:3), so every card in a row lines up whatever the photo's shape."""

from __future__ import annotations

import io
import logging

import streamlit as st
from PIL import Image, ImageOps

from picmetric_ui import resources

log = logging.getLogger(__name__)

CARD_SIZE = (320, 240)
BACKDROP = (100, 116, 139)  # a neutral slate that sits well on the light and the dark theme


def jpeg_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@st.cache_data(ttl=600, max_entries=512, show_spinner=False)
def _card(settings_key: str, key: str) -> bytes:
    stored = Image.open(io.BytesIO(resources.service().read_object(key))).convert("RGB")
    return jpeg_of(ImageOps.pad(stored, CARD_SIZE, color=BACKDROP))


def clear() -> None:
    """Forget every cached card (called after analyses are deleted)."""
    _card.clear()


def card_thumbnail(key: str | None) -> bytes:
    """The stored thumbnail at ``key``, letterboxed to 4:3; a blank card when it cannot be read (logged)."""
    if key is not None:
        try:
            return _card(resources.settings_key(resources.settings()), key)
        except Exception:  # a missing or unreadable thumbnail must not take the gallery down
            log.exception("thumbnail %s could not be read", key)
    return jpeg_of(Image.new("RGB", CARD_SIZE, BACKDROP))
