"""Every kind of bad clip gets its own clear message, and nothing of it is stored (no row, no object).

The clips are made here with PyAV; broken ones are real clips with their headers changed the way a damaged or
hostile file would have them. None of these reaches the networks (the runtime has none to run).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from picmetric_core.errors import VideoRejected, VideoTimedOut, VideoTooLarge
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.runtime import Runtime
from picmetric_core.video.probe import Deadline, VideoLimits, check_limits, is_video, probe, sniff_container
from picmetric_core.video.results import VideoInfo
from tests.support.api import NoNetworks
from tests.support.photos import darknet_photo
from tests.support.services import make_settings
from tests.support.videos import Sprite, audio_only, dog_patch, make_clip
from tests.video.conftest import stored_keys

DOG = Sprite(dog_patch(), (0, 100), (400, 100))


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_clip([DOG], seconds=2.0, fps=10, size=(320, 240))


@pytest.fixture(scope="module")
def avi() -> bytes:
    return make_clip([DOG], seconds=1.0, fps=10, size=(320, 240), codec="mpeg4", container="avi")


def _runtime(tmp_path: Path, **settings) -> Runtime:
    config = make_settings(tmp_path, **settings)
    return Runtime(config, ModelLoader(config, load=lambda _settings: NoNetworks()))


def _refused(tmp_path: Path, data: bytes, error: type[Exception], words: str, **settings) -> str:
    """Analyse ``data`` and expect a refusal containing ``words``, with nothing stored afterwards."""
    runtime = _runtime(tmp_path, **settings)
    try:
        with pytest.raises(error) as raised:
            runtime.videos().analyze_file(data, "bad.mp4")
        message = str(raised.value)
        assert words in message
        assert "/tmp" not in message and "bad.mp4" not in message  # no path in a message for users
        assert runtime.videos().list() == []
        root = runtime.settings.resolved_store_dir
        assert not root.exists() or stored_keys(root) == []
        return message
    finally:
        runtime.close()


def _patch_avi(data: bytes, chunk: bytes, offset: int, value: int) -> bytes:
    """``data`` with the 32-bit field ``offset`` bytes into the first ``chunk`` chunk's data set to ``value``."""
    start = data.index(chunk) + 8 + offset
    return data[:start] + struct.pack("<I", value) + data[start + 4 :]


def test_containers_are_recognised_by_their_bytes_not_their_names(clip, avi, tmp_path):
    webm = make_clip([DOG], seconds=0.5, fps=10, size=(320, 240), codec="libvpx-vp9", container="webm")
    assert [sniff_container(data[:16]) for data in (clip, avi, webm)] == ["mp4", "avi", "matroska"]
    (tmp_path / "holiday.jpg").write_bytes(clip)
    (tmp_path / "clip.mp4").write_bytes(darknet_photo("dog.jpg").read_bytes())
    assert is_video(tmp_path / "holiday.jpg") and not is_video(tmp_path / "clip.mp4")
    limits = VideoLimits(10**9, 60, 10**7, 30)
    assert probe(webm, limits).codec == "vp9" and probe(avi, limits).codec == "mpeg4"


def test_an_empty_file(tmp_path):
    _refused(tmp_path, b"", VideoRejected, "empty")


def test_a_photo_is_not_a_video(tmp_path):
    _refused(tmp_path, darknet_photo("dog.jpg").read_bytes(), VideoRejected, "not a video PicMetric can read")


def test_a_clip_cut_short_before_its_index(clip, tmp_path):
    _refused(tmp_path, clip[: len(clip) // 2], VideoRejected, "damaged or cut short")


def test_a_clip_cut_short_after_its_header(tmp_path):
    webm = make_clip([DOG], seconds=4.0, fps=10, size=(320, 240), codec="libvpx-vp9", container="webm")
    _refused(tmp_path, webm[: len(webm) // 3], VideoRejected, "cut short")


def test_audio_only(tmp_path):
    _refused(tmp_path, audio_only(), VideoRejected, "audio only")


def test_a_codec_that_is_not_decoded(tmp_path):
    ffv1 = make_clip([DOG], seconds=0.5, fps=10, size=(320, 240), codec="ffv1", container="matroska")
    message = _refused(tmp_path, ffv1, VideoRejected, "ffv1")
    assert "H.264" in message


def test_a_container_declaring_a_frame_of_100000_by_100000(avi, tmp_path):
    # FFmpeg takes a frame's size from the bitstream when it opens a clip, so an AVI header claiming 100,000 ×
    # 100,000 is read at its true size and nothing that large is ever allocated ...
    huge = _patch_avi(_patch_avi(avi, b"avih", 32, 100_000), b"avih", 36, 100_000)
    huge = _patch_avi(_patch_avi(huge, b"strf", 4, 100_000), b"strf", 8, 100_000)
    assert (probe(huge, VideoLimits.from_settings(make_settings(tmp_path))).width) == 320
    # ... and a size that is declared after opening is refused by the pixel limit, before any frame is decoded.
    info = VideoInfo(10.0, 30.0, 100_000, 100_000, "h264", "matroska", 300, False)
    with pytest.raises(VideoTooLarge, match=r"100,000×100,000 pixels; the limit is 8,294,400 pixels"):
        check_limits(info, VideoLimits.from_settings(make_settings(tmp_path)))


def test_a_container_declaring_a_billion_frames(avi, tmp_path):
    lying = _patch_avi(_patch_avi(avi, b"avih", 16, 1_000_000_000), b"strh", 32, 1_000_000_000)
    _refused(tmp_path, lying, VideoTooLarge, "")


def test_a_clip_over_the_length_limit(clip, tmp_path):
    _refused(tmp_path, clip, VideoTooLarge, "the limit is 1 s", video_max_seconds=1.0)


def test_a_clip_over_the_size_limit(clip, tmp_path):
    _refused(tmp_path, clip, VideoTooLarge, "the limit is 1 KB", video_max_bytes=1024)


def test_frames_over_the_pixel_limit(clip, tmp_path):
    _refused(tmp_path, clip, VideoTooLarge, "320×240", video_max_pixels=320 * 200)


def test_one_deadline_for_the_whole_analysis(clip, tmp_path):
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            self.now += 0.01  # every look at the clock costs 10 ms: a decoder that crawls
            return self.now

    limits = VideoLimits(10**9, 60, 10**7, 0.1)
    with pytest.raises(VideoTimedOut, match=r"longer than the limit of 0\.1 s"):
        from picmetric_core.video.frames import sampled_frames

        info = probe(clip, limits)
        for _ in sampled_frames(clip, info, 5.0, limits, Deadline(0.1, clock=Clock())):
            pass
