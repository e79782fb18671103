"""``picmetric analyze clip --json`` as a user runs it: the video's document, found by its container, not its name."""

from __future__ import annotations

import json

import pytest

from tests.core.test_cli import run_cli

pytestmark = pytest.mark.slow


def test_analyze_json_prints_the_videos_document(tmp_path, empty_models_dir, horse_and_face_clip):
    clip = tmp_path / "walk.bin"  # no video extension: the container says what it is
    clip.write_bytes(horse_and_face_clip)
    run = run_cli(str(clip), "--json", models_dir=empty_models_dir, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    (document,) = json.loads(run.stdout)
    assert document["kind"] == "video" and document["input"] == str(clip)
    assert document["info"]["codec"] == "h264" and document["info"]["has_audio"] is True
    assert {"horse", "face"} <= {track["label"] for track in document["tracks"]}
    assert len(document["timeline"]) == 15 and document["links"]["annotated"].endswith("/annotated.mp4")
    assert (tmp_path / "data" / "store" / document["links"]["annotated"]).is_file()
