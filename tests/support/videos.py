"""Clips made in the tests from photos that ship with packages: photo cut-outs sliding over a background.

Where each cut-out is at every moment is known, so tracks and line crossings have known right answers.

Example:
    >>> clip = make_clip([Sprite(horse_patch(), (0, 100), (500, 100))], seconds=3)  # doctest: +SKIP
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from tests.support.photos import darknet_photo

# Cut-outs of photos whose contents the detectors know (boxes from the darknet photos, with a margin).
HORSE_IN_PERSON_JPG = (389, 126, 614, 341)  # yolov3-tiny: horse 0.94 at [399, 136, 604, 331]
DOG_IN_PERSON_JPG = (62, 257, 211, 362)  # dog 0.90 at [72, 267, 201, 352]
FACE_IN_ASTRONAUT = (150, 30, 300, 210)  # MTCNN: one face at [182, 64, 265, 171]


@dataclass(frozen=True)
class Sprite:
    """A picture moving in a straight line from ``start`` to ``end`` (top-left corners) over the clip."""

    rgb: np.ndarray
    start: tuple[float, float]
    end: tuple[float, float]

    def corner(self, progress: float) -> tuple[int, int]:
        x = self.start[0] + (self.end[0] - self.start[0]) * progress
        y = self.start[1] + (self.end[1] - self.start[1]) * progress
        return round(x), round(y)


def darknet_patch(name: str, box: tuple[int, int, int, int], scale: float = 1.0) -> np.ndarray:
    rgb = np.asarray(Image.open(darknet_photo(name)).convert("RGB"))
    patch = Image.fromarray(rgb[box[1] : box[3], box[0] : box[2]])
    if scale != 1.0:
        patch = patch.resize((round(patch.width * scale), round(patch.height * scale)))
    return np.asarray(patch)


def horse_patch(scale: float = 1.0) -> np.ndarray:
    return darknet_patch("person.jpg", HORSE_IN_PERSON_JPG, scale)


def dog_patch(scale: float = 1.0) -> np.ndarray:
    return darknet_patch("person.jpg", DOG_IN_PERSON_JPG, scale)


def face_patch(scale: float = 1.0) -> np.ndarray:
    from skimage import data

    patch = Image.fromarray(
        data.astronaut()[FACE_IN_ASTRONAUT[1] : FACE_IN_ASTRONAUT[3], FACE_IN_ASTRONAUT[0] : FACE_IN_ASTRONAUT[2]]
    )
    if scale != 1.0:
        patch = patch.resize((round(patch.width * scale), round(patch.height * scale)))
    return np.asarray(patch)


def background(width: int, height: int) -> np.ndarray:
    """A quiet grey-green gradient: nothing on it for a detector to find."""
    ramp = np.linspace(90, 150, width, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(ramp, (height, width, 1)) * np.array([0.9, 1.0, 0.85], dtype=np.float32)
    return base.astype(np.uint8)


def frame_at(sprites: list[Sprite], progress: float, width: int, height: int) -> np.ndarray:
    canvas = background(width, height).copy()
    for sprite in sprites:
        x, y = sprite.corner(progress)
        h, w = sprite.rgb.shape[:2]
        x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x2 > x1 and y2 > y1:
            canvas[y1:y2, x1:x2] = sprite.rgb[y1 - y : y2 - y, x1 - x : x2 - x]
    return canvas


def make_clip(
    sprites: list[Sprite],
    *,
    seconds: float = 3.0,
    fps: int = 15,
    size: tuple[int, int] = (640, 360),
    codec: str = "libx264",
    container: str = "mp4",
    audio: bool = False,
    audio_codec: str = "aac",
    rotation: int = 0,
) -> bytes:
    """The clip's bytes: ``sprites`` moving over :func:`background`, optionally with a 440 Hz tone.

    With ``rotation`` (90, 180 or 270), the clip is stored the way a phone stores one: each frame turned that many
    degrees clockwise, and a display matrix (written by PyAV) saying to turn it back counter-clockwise to show
    it; ``size`` and the sprites' paths are as shown.
    """
    width, height = size
    stored_width, stored_height = (height, width) if rotation % 180 else (width, height)
    buffer = io.BytesIO()
    frames = round(seconds * fps)
    with av.open(buffer, mode="w", format=container) as output:
        video = output.add_stream(codec, rate=fps)
        video.width, video.height = stored_width, stored_height
        if rotation:
            video.set_display_rotation(rotation)
        video.pix_fmt = "yuv420p" if codec not in ("ffv1", "png") else ("rgb24" if codec == "png" else "yuv420p")
        if codec == "libx264":
            video.options = {"preset": "ultrafast"}
        sound = None
        if audio:
            sound = output.add_stream(audio_codec, rate=48_000)
            sound.layout = "mono"
        for number in range(frames):
            rgb = frame_at(sprites, number / max(frames - 1, 1), width, height)
            stored = np.ascontiguousarray(np.rot90(rgb, -(rotation // 90)))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = number
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                output.mux(packet)
        for packet in video.encode():
            output.mux(packet)
        if sound is not None:
            _tone(output, sound, seconds)
    return buffer.getvalue()


def _tone(output, sound, seconds: float) -> None:
    rate = 48_000
    samples = int(seconds * rate)
    chunk = 1024
    for start in range(0, samples, chunk):
        t = (np.arange(start, min(start + chunk, samples)) / rate).astype(np.float32)
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(wave, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in sound.encode(frame):
            output.mux(packet)
    for packet in sound.encode():
        output.mux(packet)


def audio_only(seconds: float = 2.0) -> bytes:
    """An M4A (MP4 container) with sound and no picture."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        sound = output.add_stream("aac", rate=48_000)
        sound.layout = "mono"
        _tone(output, sound, seconds)
    return buffer.getvalue()
