"""Image intake: bytes in, a decoded RGB image with its identity out, or a clear refusal.

The format is decided by the file's first bytes, never by its name or a declared content type, and
only the six formats below are ever handed to Pillow. Sizes are checked twice: the byte count before
anything is parsed, and the pixel count from the header before any pixel is decoded.

Example:
    >>> from picmetric_core.config import Settings
    >>> image = decode_for(Settings(), open("dog.jpg", "rb").read())  # doctest: +SKIP
    >>> image.rgb.shape, image.format  # doctest: +SKIP
    ((576, 768, 3), 'JPEG')
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from picmetric_core import formats
from picmetric_core.errors import CorruptImage, ImageTooLarge, NotAnImage

if TYPE_CHECKING:
    from picmetric_core.config import Settings
    from picmetric_core.results import Analysis

SUPPORTED_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
"""The formats PicMetric reads, as a user should read them."""

CONTENT_TYPES: dict[str, str] = formats.CONTENT_TYPE_BY_NAME
"""Pillow format name → the content type PicMetric reports and serves (from :mod:`picmetric_core.formats`)."""

UPLOAD_EXTENSIONS = formats.UPLOAD_EXTENSIONS
"""File-name endings an upload widget may offer (a hint for the picker only; decoding sniffs content)."""

NOT_AN_IMAGE_MESSAGE = f"This file is not an image PicMetric can read ({SUPPORTED_FORMATS})."

DRAFT_SLACK = 0.9
"""A large JPEG is decoded straight to 1/2, 1/4 or 1/8 of its size (libjpeg's DCT scaling) when that is at
least this fraction of ``max_side``, and kept at that size, with no resampling pass: a 4000 × 3000 photo
(12 MP) decodes to 2000 × 1500 in a third of the time a full decode and downscale to 2048 took."""
_ORIENTATION = 0x0112
_WIDE_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the networks, and the original bytes it came from.

    ``rgb`` is at most ``max_side`` pixels on its longer side (see :func:`decode_image`); ``width``
    and ``height`` are always the original's, and results go back to its pixels with
    :meth:`in_original_pixels`.
    """

    data: bytes  # the original bytes, exactly as received
    rgb: np.ndarray  # HxWx3 uint8, EXIF orientation applied, possibly downscaled
    md5: str  # hex md5 of ``data``: the image's identity
    format: str  # "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"
    content_type: str  # "image/jpeg", ...
    original_size: tuple[int, int] | None = None  # (width, height) when ``rgb`` was downscaled

    @property
    def width(self) -> int:
        return self.original_size[0] if self.original_size else int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return self.original_size[1] if self.original_size else int(self.rgb.shape[0])

    @cached_property
    def phash(self) -> int:
        """The 64-bit perceptual hash of ``rgb``, computed once (near-duplicate checks and the signature)."""
        from picmetric_core.similar.phash import perceptual_hash

        return perceptual_hash(self.rgb)

    @property
    def scale(self) -> float:
        """Original pixels per pixel of ``rgb`` (1.0 unless downscaled)."""
        return self.width / int(self.rgb.shape[1])

    def in_original_pixels(self, analysis: Analysis) -> Analysis:
        """``analysis`` of ``rgb`` with its boxes and landmarks in the original image's pixels."""
        if self.original_size is None:
            return analysis
        return analysis.with_boxes_scaled(self.scale, self.width, self.height)

    @property
    def byte_size(self) -> int:
        return len(self.data)


def sniff_format(data: bytes) -> str | None:
    """The supported format the bytes start like, or ``None``.

    Only magic bytes are looked at, so this is cheap enough to run on the first chunk of a download.

    Args:
        data: The file's bytes (the first 16 are enough).

    Returns:
        ``"JPEG"``, ``"PNG"``, ``"WEBP"``, ``"GIF"``, ``"BMP"``, ``"TIFF"`` or ``None``.

    Example:
        >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8))
        'PNG'
        >>> sniff_format(b"<svg xmlns=...") is None
        True
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic TIFF and BigTIFF
        return "TIFF"
    return None


def format_size(byte_count: int, *, round_up: bool = False) -> str:
    """A byte count as a person reads it, in binary units (the default limit of 20 MiB reads "20 MB").

    Args:
        byte_count: Number of bytes.
        round_up: Round the last digit up, so a file just over a limit never reads as equal to it.

    Returns:
        Text such as ``"512 bytes"``, ``"3.5 KB"``, ``"31.2 MB"``.

    Example:
        >>> format_size(20 * 1024 * 1024), format_size(20 * 1024 * 1024 + 1, round_up=True)
        ('20 MB', '20.1 MB')
    """
    if byte_count < 1024:
        return f"{byte_count} bytes"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if byte_count >= scale:
            tenths = byte_count * 10 / scale
            tenths = math.ceil(tenths) if round_up else round(tenths)
            return f"{tenths / 10:,.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")


def too_many_bytes(byte_count: int, limit: int) -> ImageTooLarge:
    """The refusal for a file over the byte limit (shared with URL fetching).

    Example:
        >>> str(too_many_bytes(32_715_571, 20 * 1024 * 1024))
        'The file is 31.2 MB; the limit is 20 MB.'
    """
    return ImageTooLarge(f"The file is {format_size(byte_count, round_up=True)}; the limit is {format_size(limit)}.")


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, max_side: int | None = None) -> DecodedImage:
    """Decode untrusted bytes into an 8-bit RGB array, or refuse them with a message for the user.

    JPEG, PNG, WebP, GIF (first frame), BMP and TIFF (first page) are read, detected by content.
    EXIF orientation is applied; grayscale, palette, alpha (composited on white), CMYK and 16-bit
    images all come out as HxWx3 ``uint8``.

    Args:
        data: The file's bytes, exactly as received.
        max_bytes: Largest accepted file, in bytes.
        max_pixels: Largest accepted width × height, checked from the header before decoding.
        max_side: Longest side of :attr:`DecodedImage.rgb`: a larger image is downscaled right after
            decoding (a JPEG already while decoding, possibly to a little less: :data:`DRAFT_SLACK`), so
            the networks, overlays and thumbnail never handle its full size. ``None`` keeps every pixel.

    Returns:
        The decoded image with the original bytes and their md5.

    Raises:
        NotAnImage: Empty input, or not one of the supported formats (SVG, PDF, text, ...).
        ImageTooLarge: Over ``max_bytes``, or the header declares over ``max_pixels``.
        CorruptImage: Looks like a supported format but is truncated or damaged.

    Example:
        >>> image = decode_image(open("dog.jpg", "rb").read(), max_bytes=20 << 20, max_pixels=50_000_000)
        ... # doctest: +SKIP
        >>> image.rgb.dtype, image.md5  # doctest: +SKIP
        (dtype('uint8'), '0c1f...')
    """
    if not data:
        raise NotAnImage("The file is empty.")
    if len(data) > max_bytes:
        raise too_many_bytes(len(data), max_bytes)
    image_format = sniff_format(data)
    if image_format is None:
        raise NotAnImage(NOT_AN_IMAGE_MESSAGE)

    with _open_checked(data, image_format, max_pixels) as image:
        header_size = image.size
        rgb = _plain_jpeg(data, image, max_side) if image_format == "JPEG" else None
        turned = False
        if rgb is None:
            if max_side is not None and image_format == "JPEG":
                # libjpeg scales by 1/2, 1/4 or 1/8 as it decodes: to the smallest that keeps DRAFT_SLACK of max_side.
                image.draft("RGB", _fitted(header_size, math.floor(max_side * DRAFT_SLACK)))
            _load_fully(image, image_format)
            if image_format == "JPEG":
                _refuse_cut_jpeg(data)
            oriented = _oriented(image)
            turned = oriented.size != image.size
            rgb = _to_rgb(oriented)
    original_size = (header_size[1], header_size[0]) if turned else header_size
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        rgb = _downscaled(rgb, max_side)
    return DecodedImage(
        data=data,
        rgb=rgb,
        md5=hashlib.md5(data).hexdigest(),
        format=image_format,
        content_type=CONTENT_TYPES[image_format],
        original_size=original_size if original_size != (rgb.shape[1], rgb.shape[0]) else None,
    )


def decode_for(settings: Settings, data: bytes) -> DecodedImage:
    """:func:`decode_image` with the limits from ``settings``.

    Example:
        >>> from picmetric_core.config import Settings
        >>> decode_for(Settings(), b"")
        Traceback (most recent call last):
        ...
        picmetric_core.errors.NotAnImage: The file is empty.
    """
    return decode_image(
        data,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        max_side=settings.analysis_max_side,
    )


def thumbnail_jpeg(rgb: np.ndarray, max_side: int = 320, *, quality: int = 85) -> bytes:
    """A JPEG no larger than ``max_side`` on its longer side, for lists and previews.

    Args:
        rgb: HxWx3 ``uint8`` image (as in :attr:`DecodedImage.rgb`).
        max_side: Longest side of the thumbnail in pixels; smaller images are not enlarged.
        quality: JPEG quality.

    Returns:
        The JPEG file's bytes.

    Example:
        >>> jpeg = thumbnail_jpeg(np.zeros((480, 640, 3), np.uint8))
        >>> Image.open(io.BytesIO(jpeg)).size
        (320, 240)
    """
    image = Image.fromarray(_shrunk(np.ascontiguousarray(rgb, dtype=np.uint8), max_side), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _open_checked(data: bytes, image_format: str, max_pixels: int) -> Image.Image:
    """Parse only the header, with exactly one Pillow plugin, and refuse oversized images."""
    try:
        image = Image.open(io.BytesIO(data), formats=[image_format])
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires inside open() for very large headers, before we see the size.
        raise ImageTooLarge(
            f"The image declares more pixels than PicMetric can safely open; "
            f"the limit is {_describe_pixels(max_pixels)}."
        ) from exc
    except Exception as exc:
        raise _damaged(image_format) from exc

    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise _damaged(image_format)
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(
            f"The image is {width:,} × {height:,} pixels ({_describe_pixels(width * height)}); "
            f"the limit is {_describe_pixels(max_pixels)}."
        )
    return image


def _load_fully(image: Image.Image, image_format: str) -> None:
    """Decode every pixel of the first frame now, so truncation is an error here and not later."""
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:
        raise _damaged(image_format) from exc


def _fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` shrunk (never grown) so that its longer side is ``max_side``."""
    ratio = min(1.0, max_side / max(size))
    return max(1, round(size[0] * ratio)), max(1, round(size[1] * ratio))


def _downscaled(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its longer side ``max_side``, averaged over source pixels (no aliasing)."""
    import cv2

    width, height = _fitted((rgb.shape[1], rgb.shape[0]), max_side)
    return np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))


def _shrunk(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """``rgb`` with its longer side at most ``max_side``, averaged over source pixels (no aliasing).

    A large image is first box-averaged by a whole factor (OpenCV's fast path; the last rows and
    columns that do not fill a box are dropped), keeping at least twice the size wanted: a thumbnail
    of a 2048-pixel copy costs about 4 ms instead of 9 (Pillow's Lanczos).
    """
    import cv2

    height, width = rgb.shape[:2]
    target = _fitted((width, height), max_side)
    if target == (width, height):
        return rgb
    step = min(width // target[0], height // target[1]) // 2
    if step >= 2:
        cropped = rgb[: height - height % step, : width - width % step]
        rgb = cv2.resize(cropped, (width // step, height // step), interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, target, interpolation=cv2.INTER_AREA)


def _plain_jpeg(data: bytes, image: Image.Image, max_side: int | None) -> np.ndarray | None:
    """A colour JPEG that needs no turning and no scaling while decoding, decoded by libjpeg-turbo in strict
    mode (``simplejpeg``): the same pixels as Pillow's decode, in one pass that is also the truncation check
    (1.1 ms against 1.7 + 0.65 ms for a 640×480 photo). None where the general path must decode it: another
    colour space, an EXIF turn, a size the decoder would scale, or a libjpeg warning that is not a
    premature end (Pillow's path decides on those as before).
    """
    import simplejpeg

    needs_draft = max_side is not None and max(image.size) > math.floor(max_side * DRAFT_SLACK)
    if image.mode != "RGB" or needs_draft or image.getexif().get(_ORIENTATION, 1) in range(2, 9):
        return None
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except (ValueError, RuntimeError) as exc:
        if "premature end" in str(exc).lower():
            raise _damaged("JPEG") from exc
        return None


def _refuse_cut_jpeg(data: bytes) -> None:
    """Refuse a JPEG whose compressed data ends early, even when an end-of-image marker was appended.

    Pillow's libjpeg pads such a file with grey and reports nothing; libjpeg-turbo in ``simplejpeg``
    raises on its warnings when strict. Decoding at 1/8 scale still reads every coefficient, so the
    check costs about 1/10 of the full decode. Only "premature end" warnings refuse the file:
    others (such as stray bytes before a marker, common in camera files) leave the pixels whole.
    """
    import simplejpeg

    try:
        header = simplejpeg.decode_jpeg_header(data)
        colorspace = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}.get(header[2], "RGB")
        simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, min_height=1, min_width=1)
    except (ValueError, RuntimeError) as exc:  # anything else it cannot read is left to Pillow's verdict
        if "premature end" in str(exc).lower():
            raise _damaged("JPEG") from exc


def _oriented(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation tag (``image`` itself when it is upright)."""
    try:
        if image.getexif().get(_ORIENTATION, 1) not in range(2, 9):
            return image  # no copy: a 12 MP photo's pixels are 36 MB
        return ImageOps.exif_transpose(image)
    except Exception:
        # Broken EXIF is common in camera and editor output; the pixels themselves are fine.
        return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode as a contiguous HxWx3 uint8 array."""
    if image.mode in _WIDE_GRAY_MODES or image.mode == "F":
        gray = _wide_gray_to_8bit(image)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
    try:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    except ValueError as exc:
        raise NotAnImage(f"This image's colour mode ({image.mode}) is not supported.") from exc
    return np.array(rgb, dtype=np.uint8)  # one copy, writable


def _wide_gray_to_8bit(image: Image.Image) -> np.ndarray:
    """16-bit (and 32-bit integer or float) grayscale scaled to 0–255 rather than clipped."""
    values = np.asarray(image)
    if image.mode == "F":
        values = values * 255.0 if float(np.nanmax(values, initial=0.0)) <= 1.0 else values
        return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
    # Pillow reads 16-bit sources as "I;16*" or "I"; both hold 0–65535.
    wide = np.clip(values.astype(np.float64), 0, 65535)
    return (wide / 257.0).round().astype(np.uint8)


def _damaged(image_format: str) -> CorruptImage:
    name = "WebP" if image_format == "WEBP" else image_format
    return CorruptImage(f"This {name} file is damaged or incomplete, so it cannot be read.")


def _describe_pixels(pixel_count: int) -> str:
    if pixel_count < 100_000:
        return f"{pixel_count:,} pixels"
    megapixels = f"{pixel_count / 1e6:,.1f}".removesuffix(".0")
    return f"{megapixels} megapixel" + ("" if megapixels == "1" else "s")
