"""A batch over a folder with a photo, a short clip and a damaged clip, and over URLs of a clip, a clip over the
video byte limit and a photo: each clip is analysed as a video, each photo as a photo.

Real components, kept cheap: the local Ray that ``picmetric batch`` starts (one actor), the shipped networks,
SQLite and a local folder store, 2 s 320×180 clips, and a web server on 127.0.0.1 for the URLs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from picmetric_core.batch.jobs import BatchOptions
from picmetric_core.batch.runner import run_batch
from picmetric_core.history import HistoryQuery
from picmetric_core.intake.images import format_size
from picmetric_core.runtime import Runtime
from tests.support.batch import PHOTOS
from tests.support.services import make_settings
from tests.support.videos import Sprite, horse_patch, make_clip
from tests.support.web import local_web_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def _walk(start_y: int, seconds: float = 2.0) -> bytes:
    return make_clip(
        [Sprite(horse_patch(0.4), (-10, start_y), (250, start_y + 10))], seconds=seconds, fps=10, size=(320, 180)
    )


CLIPS = {
    "/clips/run.mp4": _walk(60),
    "/clips/long.mp4": _walk(90, seconds=8.0),
    "/photos/dog.jpg": PHOTOS[1].read_bytes(),
}
"""What the web server serves (as ``application/octet-stream``: the bytes, not the label, say what a file is)."""


class _Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = CLIPS.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    """A web server on 127.0.0.1 (the batch's settings allow private addresses) serving :data:`CLIPS`."""
    with local_web_server(_Files) as url:
        yield url


def test_a_batch_analyses_the_videos_in_its_folder_and_at_its_urls(tmp_path, empty_models_dir, web):
    import ray

    assert not ray.is_initialized(), "a Ray is connected already: this test starts the batch's own"
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copyfile(PHOTOS[0], folder / "photo.jpg")
    clip = _walk(30)
    (folder / "walk.mp4").write_bytes(clip)
    (folder / "broken.mov").write_bytes(clip[: len(clip) // 3])  # an MP4 box, then nothing decodable
    small, large = max(len(clip), len(CLIPS["/clips/run.mp4"])), len(CLIPS["/clips/long.mp4"])
    limit = (small + large) // 2
    assert small < limit < large < len(CLIPS["/photos/dog.jpg"])  # each kind is held to its own limit
    settings = make_settings(
        tmp_path / "data", models_dir=empty_models_dir, allow_private_urls=True, video_max_bytes=limit
    )
    urls = [f"{web}{path}" for path in CLIPS]

    summary = run_batch(settings, [str(folder), *urls], BatchOptions(actors=(1, 1), batch_size=4))

    job = summary.job
    assert (job.total, job.new, job.seen, job.failed) == (6, 4, 0, 2)
    failures = {failure.item.rsplit("/", 1)[-1]: failure.error for failure in summary.failures}
    assert failures.keys() == {"broken.mov", "long.mp4"}
    assert "video" in failures["broken.mov"].lower()
    assert f"the limit is {format_size(limit)}" in failures["long.mp4"]  # the video byte limit, not the image one
    runtime = Runtime(settings)
    try:
        videos = {video.filename: video for video in runtime.videos().list()}
        assert videos.keys() == {"walk.mp4", "run.mp4"}
        assert (videos["walk.mp4"].source, videos["walk.mp4"].source_url) == ("batch", None)
        assert (videos["run.mp4"].source, videos["run.mp4"].source_url) == ("batch", urls[0])
        for video in videos.values():
            assert runtime.videos().get(video.video_id).analysis.frames  # analysed: sampled frames with results
        photos = runtime.service().history(HistoryQuery(batch=job.id, limit=10, with_total=True))
        assert photos.total == 2  # the photos, from the folder and the URL, went the photo way
    finally:
        runtime.close()
