"""A batch over a folder with a photo, a short clip and a damaged clip: the clip is analysed as a video.

Real components, kept cheap: the local Ray that ``picmetric batch`` starts (one actor), the shipped networks,
SQLite and a local folder store, a 2 s 320×180 clip.
"""

from __future__ import annotations

import shutil

import pytest

from picmetric_core.batch.jobs import BatchOptions
from picmetric_core.batch.runner import run_batch
from picmetric_core.history import HistoryQuery
from picmetric_core.runtime import Runtime
from tests.support.batch import PHOTOS
from tests.support.services import make_settings
from tests.support.videos import Sprite, horse_patch, make_clip

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_a_batch_analyses_the_videos_in_its_folder(tmp_path, empty_models_dir):
    import ray

    assert not ray.is_initialized(), "a Ray is connected already: this test starts the batch's own"
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copyfile(PHOTOS[0], folder / "photo.jpg")
    clip = make_clip([Sprite(horse_patch(0.4), (-10, 30), (250, 40))], seconds=2.0, fps=10, size=(320, 180))
    (folder / "walk.mp4").write_bytes(clip)
    (folder / "broken.mov").write_bytes(clip[: len(clip) // 3])  # an MP4 box, then nothing decodable
    settings = make_settings(tmp_path / "data", models_dir=empty_models_dir)

    summary = run_batch(settings, [str(folder)], BatchOptions(actors=(1, 1), batch_size=4))

    job = summary.job
    assert (job.total, job.new, job.seen, job.failed) == (3, 2, 0, 1)
    (failure,) = summary.failures
    assert failure.item.endswith("broken.mov") and "video" in failure.error.lower()
    runtime = Runtime(settings)
    try:
        (video,) = runtime.videos().list()
        assert (video.filename, video.source) == ("walk.mp4", "batch")
        assert runtime.videos().get(video.video_id).analysis.frames  # analysed: sampled frames with results
        photos = runtime.service().history(HistoryQuery(batch=job.id, limit=10, with_total=True))
        assert photos.total == 1  # the photo went the photo way
    finally:
        runtime.close()
