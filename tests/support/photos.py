"""Real photos for the tests: Debian darknet's sample photos, and arrays encoded as JPEG or PNG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

DARKNET_DATA = Path("/usr/share/darknet/data")

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 50_000_000}
"""``decode_image``'s limits as the default settings set them (for helpers outside fixtures)."""


def darknet_photo(name: str) -> Path:
    """A photo shipped by Debian's ``darknet`` package (bootstrap.sh installs it)."""
    path = DARKNET_DATA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `bash bootstrap.sh test` (it installs Debian's darknet package)")
    return path


def jpeg_bytes(rgb: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def skimage_photo(name: str, scale: float = 1.0):
    """One of scikit-image's sample photos, grey ones as RGB, optionally rescaled, decoded from PNG bytes."""
    from skimage import data

    from picmetric_core.intake.images import decode_image

    rgb = getattr(data, name)()
    rgb = np.ascontiguousarray(np.stack([rgb] * 3, axis=-1) if rgb.ndim == 2 else rgb[..., :3])
    if scale != 1.0:
        image = Image.fromarray(rgb)
        rgb = np.asarray(image.resize((int(image.width * scale), int(image.height * scale))))
    return decode_image(png_bytes(rgb), **LIMITS)
