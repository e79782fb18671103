"""A phone's clip stored turned, with a display matrix saying how to show it, is analysed and shown upright.

The clips are made here with PyAV the way a phone writes them: every frame stored turned, and the stream's
display matrix (``VideoStream.set_display_rotation``) saying to turn it back. A horse walks down a portrait
picture. Upright, the detector finds it as a horse and, overlapping, a sheep (the track takes the class it was
seen as most); on its side it finds a cat or nothing.
"""

from __future__ import annotations

import io

import av
import pytest
from PIL import Image

from tests.support.videos import Sprite, horse_patch, make_clip

pytestmark = pytest.mark.slow
WIDTH, HEIGHT = 360, 640  # as shown: portrait
WALK_DOWN = Sprite(horse_patch(0.8), (80, -40), (80, 500))
HORSE_LIKE = {"horse", "sheep", "cow"}


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_turned_clip_is_analysed_drawn_encoded_and_postered_upright(video_runtime, rotation):
    clip = make_clip([WALK_DOWN], seconds=2.0, fps=10, size=(WIDTH, HEIGHT), rotation=rotation)
    with av.open(io.BytesIO(clip)) as stored:  # the file really is stored turned
        frame = next(stored.decode(video=0))
        assert frame.rotation % 360 == rotation and (frame.width < frame.height) == (rotation == 180)
    videos = video_runtime.videos()

    analysed = videos.analyze_file(clip, "phone.mp4", sample_fps=5.0)

    info = analysed.analysis.info
    assert (info.width, info.height, info.rotation) == (WIDTH, HEIGHT, rotation)  # the size as shown
    horses = [t for t in analysed.analysis.tracks if t.label in HORSE_LIKE]
    assert len(horses) == 1, analysed.analysis.tracks
    sightings = [
        obj.box for frame in analysed.analysis.frames for obj in frame.objects if obj.track_id == horses[0].track_id
    ]
    assert len(sightings) >= 5
    assert all(0 <= box.x1 < box.x2 <= WIDTH and 0 <= box.y1 < box.y2 <= HEIGHT for box in sightings)
    assert sightings[-1].y1 - sightings[0].y1 > 100  # it walks down the picture as shown
    assert all(abs(box.x1 - WALK_DOWN.start[0]) < 40 for box in sightings)  # ... and stays at its column

    poster = Image.open(io.BytesIO(videos.read(analysed.keys.poster)))
    assert poster.size == (WIDTH, HEIGHT)
    with av.open(io.BytesIO(videos.read(analysed.keys.annotated))) as annotated:
        frame = next(annotated.decode(video=0))
        assert (frame.width, frame.height, frame.rotation) == (WIDTH, HEIGHT, 0)  # upright, nothing to turn
    assert videos.get(analysed.video_id).analysis.info == info
