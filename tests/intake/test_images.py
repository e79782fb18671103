"""Image intake with real photos (scikit-image's astronaut, chelsea and camera) in every format."""

from __future__ import annotations

import hashlib
import io
import resource
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data

from picmetric_core.config import Settings
from picmetric_core.errors import CorruptImage, ImageTooLarge, NotAnImage
from picmetric_core.intake.images import (
    CONTENT_TYPES,
    NOT_AN_IMAGE_MESSAGE,
    SUPPORTED_FORMATS,
    decode_for,
    decode_image,
    sniff_format,
    thumbnail_jpeg,
    too_many_bytes,
)
from tests.support.photos import LIMITS

CHELSEA = data.chelsea()  # 300 × 451 RGB cat
ASTRONAUT = data.astronaut()  # 512 × 512 RGB
CAMERA = data.camera()  # 512 × 512 grayscale


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(raw: bytes, **limits):
    return decode_image(raw, **{**LIMITS, **limits})


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` × ``height`` RGB pixels but holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1024))) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_format_decodes_to_rgb_of_the_right_size(fmt):
    raw = encode(CHELSEA, fmt)

    image = decode(raw)

    assert image.rgb.shape == (300, 451, 3)
    assert image.rgb.dtype == np.uint8
    assert (image.width, image.height, image.byte_size) == (451, 300, len(raw))
    assert image.format == fmt
    assert image.content_type == CONTENT_TYPES[fmt]
    assert image.data is raw


@pytest.mark.parametrize(("fmt", "options"), [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_keep_every_pixel(fmt, options):
    assert np.array_equal(decode(encode(ASTRONAUT, fmt, **options)).rgb, ASTRONAUT)


def test_lossy_jpeg_stays_close_to_the_photo():
    rgb = decode(encode(ASTRONAUT, "JPEG", quality=95)).rgb

    assert np.abs(rgb.astype(int) - ASTRONAUT).mean() < 3


@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_gives_exactly_the_pixels_pillow_decodes(subsampling, progressive):
    # Plain colour JPEGs are decoded by libjpeg-turbo in one strict pass (images._plain_jpeg), the rest by Pillow.
    raw = encode(ASTRONAUT, "JPEG", quality=90, subsampling=subsampling, progressive=progressive)

    assert np.array_equal(decode(raw).rgb, np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")))


def test_md5_is_the_hash_of_the_original_bytes():
    raw = encode(CHELSEA, "JPEG")

    assert decode(raw).md5 == hashlib.md5(raw).hexdigest()


def test_format_is_detected_by_content_not_by_a_claimed_type():
    png = encode(CHELSEA, "PNG")

    assert sniff_format(png) == "PNG"
    assert decode(png).format == "PNG"


def test_exif_orientation_6_turns_the_photo_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; rotate 90° clockwise to display
    raw = encode(CHELSEA, "JPEG", quality=95, exif=exif.tobytes())

    rgb = decode(raw).rgb

    assert rgb.shape == (451, 300, 3)
    upright = np.rot90(CHELSEA, k=-1)
    assert np.abs(rgb.astype(int) - upright).mean() < 3


def test_grayscale_becomes_three_equal_channels():
    rgb = decode(encode(CAMERA, "PNG")).rgb

    assert rgb.shape == (512, 512, 3)
    for channel in range(3):
        assert np.array_equal(rgb[:, :, channel], CAMERA)


def test_transparent_pixels_are_composited_on_white():
    rgba = np.dstack([ASTRONAUT, np.full(ASTRONAUT.shape[:2], 255, np.uint8)])
    rgba[:, :256, 3] = 0  # left half fully transparent

    rgb = decode(encode(rgba, "PNG")).rgb

    assert (rgb[:, :256] == 255).all()
    assert np.array_equal(rgb[:, 256:], ASTRONAUT[:, 256:])


def test_grayscale_with_alpha_is_composited_on_white():
    alpha = np.full(CAMERA.shape, 255, np.uint8)
    alpha[:100] = 0
    gray_alpha = Image.fromarray(np.dstack([CAMERA, alpha]), mode="LA")

    rgb = decode(encode(gray_alpha, "PNG")).rgb

    assert (rgb[:100] == 255).all()
    assert np.array_equal(rgb[100:, :, 0], CAMERA[100:])


def test_palette_image_becomes_its_colours():
    palette = Image.fromarray(CHELSEA).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)

    rgb = decode(encode(palette, "PNG")).rgb

    assert np.array_equal(rgb, np.asarray(palette.convert("RGB")))


def test_palette_transparency_is_composited_on_white():
    palette = Image.fromarray(CHELSEA).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    transparent_index = int(np.asarray(palette)[0, 0])

    rgb = decode(encode(palette, "GIF", transparency=transparent_index)).rgb

    holes = np.asarray(palette) == transparent_index
    assert holes.any()
    assert (rgb[holes] == 255).all()


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    cmyk = Image.fromarray(ASTRONAUT).convert("CMYK")

    rgb = decode(encode(cmyk, fmt)).rgb

    assert rgb.shape == (512, 512, 3)
    assert np.abs(rgb.astype(int) - ASTRONAUT).mean() < 5


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_not_clipped(fmt):
    wide = CAMERA.astype(np.uint16) * 257  # the same photo spread over 0–65535
    raw = encode(Image.fromarray(wide), fmt)
    assert Image.open(io.BytesIO(raw)).mode.startswith("I")

    rgb = decode(raw).rgb

    assert np.array_equal(rgb[:, :, 1], CAMERA)


def test_bilevel_image_becomes_black_and_white():
    bilevel = Image.fromarray(CAMERA).convert("1")

    rgb = decode(encode(bilevel, "BMP")).rgb

    assert set(np.unique(rgb)) <= {0, 255}


def test_only_the_first_frame_of_an_animation_is_used():
    frames = [Image.fromarray(np.full((40, 60, 3), value, np.uint8)) for value in (10, 240)]
    raw = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])

    rgb = decode(raw).rgb

    assert rgb.shape == (40, 60, 3)
    assert rgb.max() < 50


def test_first_page_of_a_multipage_tiff_is_used():
    pages = [Image.fromarray(CHELSEA), Image.fromarray(ASTRONAUT)]
    raw = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])

    assert decode(raw).rgb.shape == (300, 451, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF"])
def test_truncated_file_is_corrupt(fmt):
    raw = encode(CHELSEA, fmt)

    with pytest.raises(CorruptImage, match="damaged or incomplete"):
        decode(raw[: len(raw) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_image_magic_followed_by_garbage_is_corrupt():
    with pytest.raises(CorruptImage):
        decode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


@pytest.mark.parametrize(
    "raw",
    [
        np.random.default_rng(7).bytes(4096),
        b"Just some notes about a cat.\n" * 20,
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n",
        b"<!doctype html><html><body><img src=cat.jpg></body></html>",
    ],
    ids=["random", "text", "svg", "pdf", "html"],
)
def test_non_images_are_refused(raw):
    with pytest.raises(NotAnImage) as caught:
        decode(raw)

    assert str(caught.value) == NOT_AN_IMAGE_MESSAGE
    assert SUPPORTED_FORMATS in str(caught.value)


def test_empty_input_is_refused():
    with pytest.raises(NotAnImage, match="empty"):
        decode(b"")


def test_over_the_byte_limit_is_refused_before_parsing():
    raw = encode(ASTRONAUT, "PNG")

    with pytest.raises(ImageTooLarge) as caught:
        decode(raw, max_bytes=100 * 1024)

    assert str(caught.value).endswith("; the limit is 100 KB.")
    assert caught.value.status == 413


def test_byte_limit_message_reads_in_megabytes():
    assert str(too_many_bytes(32_715_571, 20 * 1024 * 1024)) == "The file is 31.2 MB; the limit is 20 MB."
    assert str(too_many_bytes(20 * 1024 * 1024 + 1, 20 * 1024 * 1024)) == "The file is 20.1 MB; the limit is 20 MB."


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(ImageTooLarge) as caught:
        decode(png_claiming(3000, 3000), max_pixels=1_000_000)

    assert str(caught.value) == "The image is 3,000 × 3,000 pixels (9 megapixels); the limit is 1 megapixel."


def test_decompression_bomb_is_refused_without_allocating_it(monkeypatch):
    bomb = png_claiming(100_000, 100_000)  # 30 GB of RGB once decoded; ~1 KB on disk
    assert len(bomb) < 2048
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    with pytest.raises(ImageTooLarge):
        decode(bomb)
    # Our own check must hold even where someone switched Pillow's global guard off.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageTooLarge, match="100,000 × 100,000"):
        decode(bomb)

    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024


def test_within_limits_but_missing_pixel_data_is_corrupt():
    with pytest.raises(CorruptImage):
        decode(png_claiming(300, 300))


def test_decode_for_uses_the_settings_limits():
    raw = encode(CHELSEA, "PNG")

    assert decode_for(Settings(), raw).rgb.shape == (300, 451, 3)
    with pytest.raises(ImageTooLarge):
        decode_for(Settings(max_image_pixels=10_000), raw)
    with pytest.raises(ImageTooLarge):
        decode_for(Settings(max_image_bytes=1024), raw)


def test_thumbnail_fits_the_longest_side_and_keeps_the_aspect():
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(CHELSEA)))

    assert thumb.format == "JPEG"
    assert thumb.size == (320, 213)


def test_thumbnail_never_enlarges():
    small = CHELSEA[:100, :150]

    assert Image.open(io.BytesIO(thumbnail_jpeg(small, max_side=320))).size == (150, 100)


def test_a_large_thumbnail_looks_like_the_photo_shrunk_in_one_go():
    large = np.asarray(Image.fromarray(CHELSEA).resize((2048, 1362), Image.Resampling.BICUBIC))
    thumb = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(large))).convert("RGB"), np.int16)
    reference = np.asarray(Image.fromarray(large).resize((320, 213), Image.Resampling.LANCZOS), np.int16)

    assert thumb.shape == reference.shape == (213, 320, 3)
    assert np.abs(thumb - reference).mean() < 4  # JPEG and the averaging, no shift or aliasing


def test_a_12_megapixel_jpeg_is_decoded_straight_to_half_size():
    """4000 × 3000 with the default 2048 limit: libjpeg's 1/2 scale (2000 × 1500) is kept as it is, with no
    full-size decode and no resampling; the photo's own size is still the one reported."""
    photo = np.asarray(Image.fromarray(CHELSEA[:, 25:425]).resize((4000, 3000), Image.Resampling.BILINEAR))
    raw = encode(photo, "JPEG", quality=90)

    image = decode_for(Settings(), raw)

    assert image.rgb.shape == (1500, 2000, 3) and (image.width, image.height) == (4000, 3000)
    assert image.scale == 2.0
    halved = np.asarray(Image.fromarray(photo).reduce(2), np.int16)
    assert np.abs(image.rgb.astype(np.int16) - halved).mean() < 3
