"""A clip kept on Postgres and the S3 server (SeaweedFS), read back and deleted with no object or row left.

Real components only: the shipped networks, a fresh Postgres database with the migrations, SeaweedFS over S3.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from picmetric_core.lifecycle import ModelLoader
from picmetric_core.runtime import Runtime
from picmetric_core.store.orm import VideoRow, VideoTrackRow
from tests.support.services import s3_settings
from tests.support.videos import Sprite, horse_patch, make_clip

pytestmark = pytest.mark.slow


def bucket_keys(seaweed, bucket: str) -> list[str]:
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_clip_round_trips_through_postgres_and_s3(
    tmp_path, seaweed, bucket, fresh_pg_url, analyzer, empty_models_dir
):
    settings = s3_settings(tmp_path, seaweed, bucket, database_url=fresh_pg_url, models_dir=empty_models_dir)
    runtime = Runtime(settings, ModelLoader(settings, load=lambda _settings: analyzer))
    clip = make_clip([Sprite(horse_patch(0.5), (-10, 40), (300, 60))], seconds=2.0, fps=10, size=(320, 180))
    try:
        videos = runtime.videos()
        stored = videos.analyze_file(clip, "horse.mp4", sample_fps=5.0)
        keys = bucket_keys(seaweed, bucket)
        assert {stored.keys.original, stored.keys.annotated, stored.keys.poster, stored.keys.tracks_json} <= set(keys)
        assert all(key.startswith(f"videos/{stored.video_id}/") for key in keys)

        again = videos.get(stored.video_id)
        assert again.analysis.frames == stored.analysis.frames and again.analysis.tracks == stored.analysis.tracks
        assert videos.read(stored.keys.original) == clip
        assert videos.read(stored.keys.annotated)[4:8] == b"ftyp"
        engine = runtime.service().engine
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(VideoRow)) == 1
            tracks = connection.scalar(select(func.count()).select_from(VideoTrackRow))
        assert tracks == len(stored.analysis.tracks)

        assert videos.delete(stored.video_id) is True
        assert videos.get(stored.video_id) is None
        assert bucket_keys(seaweed, bucket) == []
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(VideoRow)) == 0
            assert connection.scalar(select(func.count()).select_from(VideoTrackRow)) == 0
    finally:
        runtime.close()
