"""One deadline for the whole analysis holds even when a decoder never returns from a call into FFmpeg.

A real FFmpeg call that never returns cannot be produced on demand, so a stand-in takes the decoder's place:
it hands over the clip's first real frames and then blocks forever, the way a stuck ``avcodec`` call holds
its thread, where no deadline check can run. Everything else is real: the job, the networks, the store and
the database.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from picmetric_core.lifecycle import ModelLoader
from picmetric_core.runtime import Runtime
from picmetric_core.video import frames
from tests.support.services import make_settings
from tests.support.videos import Sprite, dog_patch, make_clip
from tests.video.conftest import stored_keys

pytestmark = pytest.mark.slow
DEADLINE_S = 3.0


def test_a_job_whose_decoder_never_returns_fails_at_the_deadline_with_nothing_stored(
    tmp_path, analyzer, empty_models_dir, monkeypatch, caplog
):
    clip = make_clip([Sprite(dog_patch(), (0, 100), (400, 100))], seconds=2.0, fps=10, size=(320, 240))
    released = threading.Event()
    decode = frames.decoded_frames

    def stuck_after_three_frames(*args, **kwargs):
        for number, item in enumerate(decode(*args, **kwargs)):
            if number == 3:
                released.wait()  # the stand-in for an FFmpeg call that never returns
            yield item

    monkeypatch.setattr(frames, "decoded_frames", stuck_after_three_frames)
    settings = make_settings(tmp_path, models_dir=empty_models_dir, video_deadline_s=DEADLINE_S)
    runtime = Runtime(settings, ModelLoader(settings, load=lambda _settings: analyzer))
    try:
        videos = runtime.videos()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="picmetric_core.video.watchdog"):
            job_id = videos.submit(clip, "stuck.mp4")
            while (job := videos.job(job_id)).state not in ("done", "failed"):
                assert time.monotonic() - started < DEADLINE_S + 30, "the job outlived its deadline"
                time.sleep(0.05)
        waited = time.monotonic() - started

        assert job.state == "failed" and job.stage == "failed"
        assert f"took longer than the limit of {DEADLINE_S:g} s" in job.error and "nothing was stored" in job.error
        assert DEADLINE_S <= waited < DEADLINE_S + 10
        assert "abandoned" in caplog.text  # the stuck thread is logged, not silently left behind
        stuck = [thread for thread in threading.enumerate() if thread.name == "picmetric-video-analysing"]
        assert stuck and all(thread.daemon for thread in stuck)  # it never keeps the process from exiting
        assert videos.list() == []
        root = runtime.settings.resolved_store_dir
        assert not root.exists() or stored_keys(root) == []
        frames_before = len(job.partial)

        released.set()  # the call "returns": the abandoned thread meets the passed deadline and ends
        for thread in stuck:
            thread.join(timeout=30)
            assert not thread.is_alive()
        finished = videos.job(job_id)
        assert (finished.state, finished.stage, len(finished.partial)) == ("failed", "failed", frames_before)
        assert videos.list() == [] and (not root.exists() or stored_keys(root) == [])
    finally:
        released.set()
        runtime.close()
