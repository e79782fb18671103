"""Retention, ``--older-than`` and History's filters delete the clips they select, each whole, and no other.

Real components: the shipped networks, a fresh Postgres database with the migrations, SeaweedFS over S3, the
``picmetric delete`` command as a user runs it and ``POST /v1/analyses/delete``. The older clip is made older by
moving its row's analysis time back, the way a clip analysed 40 days ago has it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from picmetric_core.cli import build_parser
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.runtime import Runtime
from picmetric_core.store.orm import VideoRow, VideoTrackRow
from tests.support.api import app_client
from tests.support.services import s3_settings
from tests.support.videos import Sprite, horse_patch, make_clip
from tests.video.test_postgres_s3 import bucket_keys

pytestmark = pytest.mark.slow


def _clip(start_y: int) -> bytes:
    return make_clip([Sprite(horse_patch(0.5), (-10, start_y), (300, start_y))], seconds=1.0, fps=10, size=(320, 180))


def test_retention_and_filters_delete_the_clips_they_select_with_every_object(
    tmp_path, seaweed, bucket, fresh_pg_url, analyzer, empty_models_dir, capsys
):
    settings = s3_settings(tmp_path, seaweed, bucket, database_url=fresh_pg_url, models_dir=empty_models_dir)
    runtime = Runtime(settings, ModelLoader(settings, load=lambda _settings: analyzer))
    try:
        videos = runtime.videos()
        old = videos.analyze_file(_clip(20), "old-walk.mp4", sample_fps=5.0)
        new = videos.analyze_file(_clip(60), "new-walk.mp4", sample_fps=5.0)
        engine = runtime.service().engine
        with engine.begin() as connection:
            connection.execute(
                update(VideoRow)
                .where(VideoRow.md5 == old.video_id)
                .values(created_at=datetime.now(UTC) - timedelta(days=40))
            )
        new_keys = {key for key in bucket_keys(seaweed, bucket) if key.startswith(f"videos/{new.video_id}/")}
        assert {new.keys.original, new.keys.annotated, new.keys.poster, new.keys.tracks_json} <= new_keys

        def delete(*flags: str, retention_days: int | None = None) -> tuple[int, str]:
            args = build_parser().parse_args(["delete", *flags])
            status = args.handler(args, settings.model_copy(update={"retention_days": retention_days}))
            return status, capsys.readouterr().out

        # A filter clips have no answer to selects none of them: the delete never goes wider than asked.
        assert delete("--older-than", "30d", "--min-faces", "1") == (0, "deleted 0 analyses\ndeleted 0 videos\n")
        status, out = delete("--older-than", "30d", "--dry-run")
        assert status == 0 and out.splitlines()[-2:] == [
            old.video_id,
            "would delete 1 videos (dry run: nothing was deleted)",
        ]
        assert videos.get(old.video_id) is not None

        status, out = delete("--retention", retention_days=30)

        assert status == 0 and out.splitlines()[-2:] == [old.video_id, "deleted 1 videos"]
        assert videos.get(old.video_id) is None
        keys = set(bucket_keys(seaweed, bucket))
        assert not [key for key in keys if key.startswith(f"videos/{old.video_id}/")]  # original, clip, poster, ...
        assert keys == new_keys and videos.get(new.video_id) is not None  # the newer clip is whole
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(VideoRow)) == 1
            tracks = connection.scalar(select(func.count()).select_from(VideoTrackRow))
        assert tracks == len(new.analysis.tracks)

        # The API's delete by filters: by file name (a dry run), then by the start of the md5.
        with app_client(settings, analyzer) as client:
            dry = client.post("/v1/analyses/delete", json={"filename": "NEW-", "dry_run": True}).json()
            assert dry["video_ids"] == [new.video_id] and videos.get(new.video_id) is not None
            assert client.post("/v1/analyses/delete", json={"filename": "old-"}).json()["video_ids"] == []
            done = client.post("/v1/analyses/delete", json={"md5": new.video_id[:8]}).json()
            assert done["video_ids"] == [new.video_id]
        assert videos.list() == [] and bucket_keys(seaweed, bucket) == []
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(VideoTrackRow)) == 0
    finally:
        runtime.close()
