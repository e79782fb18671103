"""The annotated clip keeps the original's sound: copied when MP4 holds its codec, re-encoded as AAC otherwise."""

from __future__ import annotations

import av
import pytest

from picmetric_core.video.annotate import encode_annotated
from picmetric_core.video.probe import Deadline, VideoLimits, probe
from tests.support.videos import Sprite, dog_patch, make_clip

LIMITS = VideoLimits(10**9, 60, 10**7, 60)


@pytest.mark.parametrize(
    ("container", "video", "sound", "kept_as"),
    [
        ("mp4", "libx264", "aac", "aac"),
        ("webm", "libvpx-vp9", "libopus", "opus"),
        ("matroska", "libx264", "pcm_s16le", "aac"),
    ],
)
def test_the_sound_is_kept(tmp_path, container, video, sound, kept_as):
    clip = make_clip(
        [Sprite(dog_patch(), (0, 100), (400, 100))],
        seconds=2.0,
        fps=10,
        size=(320, 240),
        codec=video,
        container=container,
        audio=True,
        audio_codec=sound,
    )
    target = tmp_path / "annotated.mp4"
    encode_annotated(clip, probe(clip, LIMITS), [], None, [], 5.0, target, [], LIMITS, Deadline(60))
    with av.open(str(target)) as annotated:
        assert annotated.streams.video[0].codec_context.name == "h264"
        assert [s.codec_context.name for s in annotated.streams.audio] == [kept_as]
        seconds = sum(frame.samples for frame in annotated.decode(audio=0)) / 48_000
    assert 1.9 <= seconds <= 2.2


def test_a_silent_clip_stays_silent(tmp_path):
    clip = make_clip([Sprite(dog_patch(), (0, 100), (400, 100))], seconds=1.0, fps=10, size=(320, 240))
    target = tmp_path / "annotated.mp4"
    encode_annotated(clip, probe(clip, LIMITS), [], None, [], 5.0, target, [], LIMITS, Deadline(60))
    with av.open(str(target)) as annotated:
        assert not annotated.streams.audio and sum(1 for _ in annotated.decode(video=0)) == 10
