"""The one table of image formats: Pillow's name, the content type served, the object-key extension.

Intake reports a decoded image's content type from it, the store names an original's key after it, and
the API recognises object keys by it.

>>> CONTENT_TYPE_BY_NAME["WEBP"], EXTENSION_BY_CONTENT_TYPE["image/jpeg"], CONTENT_TYPE_BY_EXTENSION["tiff"]
('image/webp', 'jpg', 'image/tiff')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFormat:
    """One format PicMetric reads."""

    name: str  # Pillow's format name, as :func:`picmetric_core.intake.images.sniff_format` gives it
    content_type: str
    extension: str  # of the stored original's object key
    upload_extensions: tuple[str, ...]  # file-name endings an upload picker offers


IMAGE_FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("JPEG", "image/jpeg", "jpg", ("jpg", "jpeg")),
    ImageFormat("PNG", "image/png", "png", ("png",)),
    ImageFormat("WEBP", "image/webp", "webp", ("webp",)),
    ImageFormat("GIF", "image/gif", "gif", ("gif",)),
    ImageFormat("BMP", "image/bmp", "bmp", ("bmp",)),
    ImageFormat("TIFF", "image/tiff", "tiff", ("tif", "tiff")),
)

UNKNOWN_EXTENSION = "bin"
"""The extension of an original whose content type is not in the table."""

CONTENT_TYPE_BY_NAME: dict[str, str] = {f.name: f.content_type for f in IMAGE_FORMATS}
"""Pillow format name → content type."""

EXTENSION_BY_CONTENT_TYPE: dict[str, str] = {f.content_type: f.extension for f in IMAGE_FORMATS}
"""Content type → object-key extension."""

CONTENT_TYPE_BY_EXTENSION: dict[str, str] = {f.extension: f.content_type for f in IMAGE_FORMATS}
"""Object-key extension → content type (the inverse of :data:`EXTENSION_BY_CONTENT_TYPE`)."""

ORIGINAL_EXTENSIONS: tuple[str, ...] = (*(f.extension for f in IMAGE_FORMATS), UNKNOWN_EXTENSION)
"""Every extension a stored original's key can end in."""

UPLOAD_EXTENSIONS: tuple[str, ...] = tuple(ext for f in IMAGE_FORMATS for ext in f.upload_extensions)
"""File-name endings an upload widget may offer (a hint for the picker only; decoding sniffs content)."""
