"""Edited copies of a photo that a person still calls "the same picture", for measuring and testing.

Each keeps the photo's content: a smaller size, a lower JPEG quality, a few per cent cropped off the
edges, a small colour change, and all of these together.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance

Variant = Callable[[np.ndarray], np.ndarray]


def resized(rgb: np.ndarray, scale: float = 0.5) -> np.ndarray:
    image = Image.fromarray(rgb)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def recompressed(rgb: np.ndarray, quality: int = 60) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def cropped(rgb: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """``fraction`` of the width and of the height cut off, split between the two sides."""
    height, width = rgb.shape[:2]
    dy, dx = round(height * fraction / 2), round(width * fraction / 2)
    return rgb[dy : height - dy, dx : width - dx]


def shifted_crop(rgb: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """``fraction`` of the width and of the height cut off the top-left corner only."""
    height, width = rgb.shape[:2]
    return rgb[round(height * fraction) :, round(width * fraction) :]


def recoloured(rgb: np.ndarray, brightness: float = 1.08, saturation: float = 0.9) -> np.ndarray:
    image = ImageEnhance.Brightness(Image.fromarray(rgb)).enhance(brightness)
    return np.asarray(ImageEnhance.Color(image).enhance(saturation))


def everything(rgb: np.ndarray) -> np.ndarray:
    """Resized, recompressed, 5 % cropped and recoloured."""
    return recompressed(resized(cropped(recoloured(rgb)), 0.6), 70)


VARIANTS: dict[str, Variant] = {
    "resized": resized,
    "recompressed": recompressed,
    "cropped": cropped,
    "shifted_crop": shifted_crop,
    "recoloured": recoloured,
    "everything": everything,
}
