"""A clip through the real engine: one track per moving object, each crossing counted once, the annotated clip,
and the analysis kept in the store and the database (and removed with nothing left)."""

from __future__ import annotations

import doctest
import importlib
import io
import json
import time
import zipfile

import av
import pytest

from picmetric_core.video.probe import VideoLimits
from tests.video.conftest import CENTRE_LINE, FACE, HEIGHT, HORSE, WIDTH, runtime_in, stored_keys

pytestmark = pytest.mark.slow
FPS, SECONDS, SAMPLE_FPS = 15, 3.0, 5.0


@pytest.mark.parametrize(
    "name",
    [
        "picmetric_core.video.probe",
        "picmetric_core.video.frames",
        "picmetric_core.video.counting",
        "picmetric_core.video.annotate",
        "picmetric_core.video.store",
        "picmetric_core.video.exports",
        "picmetric_core.video.encoder",
        "picmetric_core.video.watchdog",
        "picmetric_core.video.selection",
    ],
)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def _crossing_time(sprite, line_x: float) -> float:
    """When the sprite's centre passes ``line_x`` (it moves in a straight line over the whole clip)."""
    half = sprite.rgb.shape[1] / 2
    progress = (line_x - half - sprite.start[0]) / (sprite.end[0] - sprite.start[0])
    return progress * (round(SECONDS * FPS) - 1) / FPS


@pytest.fixture(scope="module")
def stored(module_video_runtime, horse_and_face_clip):
    """One analysis for the module; the last test deletes it."""
    return module_video_runtime.videos().analyze_file(
        horse_and_face_clip, "horse and face.mp4", line=CENTRE_LINE, sample_fps=SAMPLE_FPS
    )


@pytest.fixture
def video_runtime(module_video_runtime):
    return module_video_runtime


@pytest.fixture
def own_video_runtime(tmp_path, analyzer, empty_models_dir):
    runtime = runtime_in(tmp_path, analyzer, empty_models_dir)
    yield runtime
    runtime.close()


def test_each_moving_object_keeps_one_track_and_each_crossing_counts_once(stored):
    analysis = stored.analysis
    assert analysis.info.width == WIDTH and analysis.info.height == HEIGHT and analysis.info.has_audio
    assert len(analysis.frames) == round(SECONDS * SAMPLE_FPS)
    horses = [t for t in analysis.tracks if t.label == "horse"]
    faces = [t for t in analysis.tracks if t.label == "face"]
    assert len(horses) == 1, analysis.tracks
    assert len(faces) == 1, analysis.tracks
    (horse,) = horses
    # Seen from its second sampled frame (ByteTrack confirms a track on its second sighting) to the end.
    assert horse.first_seen_s <= 2 / SAMPLE_FPS and horse.last_seen_s >= SECONDS - 2 / SAMPLE_FPS
    # Every tracked sighting of the horse carries the horse's one id; no untracked box is given an id.
    ids = {o.track_id for f in analysis.frames for o in f.objects if o.label in ("horse", "sheep", "cow")}
    assert ids - {None} == {horse.track_id}
    # The horse moves right across a line drawn top to bottom: one "out" crossing, when its centre passes.
    horse_crossings = [c for c in analysis.crossings if c.track_id == horse.track_id]
    assert [c.direction for c in horse_crossings] == ["out"]
    passes = _crossing_time(HORSE, WIDTH / 2)
    assert passes < horse_crossings[0].time_s <= passes + 1 / SAMPLE_FPS + 1 / FPS
    # Everything else that crossed was moving left with the face: "in", once per track.
    others = [c for c in analysis.crossings if c.track_id != horse.track_id]
    assert others and all(c.direction == "in" for c in others)
    assert len({c.track_id for c in others}) == len(others)
    counts = {c.label: (c.inward, c.outward) for c in analysis.counts}
    assert counts["horse"] == (0, 1)
    face_passes = _crossing_time(FACE, WIDTH / 2)
    assert all(face_passes - 0.5 < c.time_s < face_passes + 0.5 for c in others)
    # Faces are found on every sampled frame and carry their track's id.
    assert all(f.face_track_ids for f in analysis.frames[1:])


def test_the_annotated_clip_is_h264_in_mp4_with_the_original_sound(stored, video_runtime):
    data = video_runtime.videos().read(stored.keys.annotated)
    with av.open(io.BytesIO(data)) as clip:
        assert clip.format.name.startswith("mov,mp4")
        video = clip.streams.video[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert [s.codec_context.name for s in clip.streams.audio] == ["aac"]
        frames = sum(1 for _ in clip.decode(video))
    assert frames == round(SECONDS * FPS)
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # index first: plays while loading


def test_the_analysis_is_kept_and_found_by_label(stored, video_runtime):
    videos = video_runtime.videos()
    store_root = video_runtime.settings.resolved_store_dir
    keys = stored_keys(store_root)
    expected = {stored.keys.original, stored.keys.annotated, stored.keys.poster, stored.keys.tracks_json}
    expected |= {t.crop_key for t in stored.analysis.tracks}
    assert set(keys) == expected
    again = videos.get(stored.video_id)
    assert again.analysis.frames == stored.analysis.frames and again.analysis.tracks == stored.analysis.tracks
    assert again.created_at.endswith("+00:00")
    assert [v.video_id for v in videos.list(labels=["horse"])] == [stored.video_id]
    assert videos.list(labels=["giraffe"]) == []
    assert dict(videos.list()[0].top_objects)["horse"] == 1
    assert videos.read(stored.keys.poster)[:3] == b"\xff\xd8\xff"
    tracks_csv = videos.tracks_csv(again).decode().splitlines()
    assert tracks_csv[0].startswith("video_id,track_id,label") and len(tracks_csv) == len(stored.analysis.tracks) + 1
    assert "horse" in videos.frames_csv(again).decode()
    document = videos.document(again)
    assert document["counts"] and len(document["timeline"]) == len(stored.analysis.frames)


def test_a_clip_analysed_before_with_the_same_line_is_not_analysed_again(stored, video_runtime, horse_and_face_clip):
    started = time.perf_counter()
    again = video_runtime.videos().analyze_file(
        horse_and_face_clip, "copy.mp4", line=CENTRE_LINE, sample_fps=SAMPLE_FPS
    )
    assert time.perf_counter() - started < 1.0
    assert again.keys == stored.keys and again.analysis.tracks == stored.analysis.tracks


def test_a_background_job_reports_progress_frames_as_they_come_and_the_stored_video(
    own_video_runtime, horse_and_face_clip
):
    videos = own_video_runtime.videos()
    job_id = videos.submit(horse_and_face_clip, "clip.mp4", sample_fps=SAMPLE_FPS)
    seen_partial = 0
    deadline = time.monotonic() + 120
    while (job := videos.job(job_id)).state not in ("done", "failed"):
        assert time.monotonic() < deadline
        seen_partial = max(seen_partial, len(job.partial))
        time.sleep(0.05)
    assert job.state == "done", job.error
    assert job.progress == 1.0 and len(job.partial) == round(SECONDS * SAMPLE_FPS)
    stored = videos.get(job.video_id)
    assert stored.analysis.line is None and stored.analysis.counts == ()
    assert videos.job("job_unknown") is None


def test_limits_follow_the_settings(video_runtime):
    limits = VideoLimits.from_settings(video_runtime.settings)
    assert limits.max_frames == limits.max_seconds * 240


def test_a_history_zip_export_carries_the_tracks_of_the_clips_with_the_label(stored, video_runtime):
    from picmetric_core import exports
    from picmetric_core.history import HistoryQuery

    service = video_runtime.service()
    with zipfile.ZipFile(io.BytesIO(exports.export(service, HistoryQuery(label="horse"), "zip"))) as archive:
        names = set(archive.namelist())
        folder = f"videos/{stored.video_id}"
        assert {f"{folder}/tracks.csv", f"{folder}/frames.csv", f"{folder}/tracks.json"} <= names
        assert "horse" in archive.read(f"{folder}/tracks.csv").decode()
        assert json.loads(archive.read(f"{folder}/tracks.json"))["video_id"] == stored.video_id
    with zipfile.ZipFile(io.BytesIO(exports.export(service, HistoryQuery(label="giraffe"), "zip"))) as archive:
        assert not [name for name in archive.namelist() if name.startswith("videos/")]
    assert exports.export(service, HistoryQuery(label="horse"), "csv").decode().count("\n") == 1  # photos only


def test_picmetric_delete_video_removes_the_clip_and_every_object(stored, video_runtime, capsys):
    """Last: it deletes the module's clip."""
    from picmetric_core.cli import build_parser

    def delete(*flags: str) -> int:
        args = build_parser().parse_args(["delete", *flags])
        return args.handler(args, video_runtime.settings)

    assert delete("--video", stored.video_id, "--label", "horse") == 2  # one selection at a time
    assert delete("--video", stored.video_id, "--dry-run") == 0
    assert video_runtime.videos().get(stored.video_id) is not None
    assert delete("--video", stored.video_id) == 0
    assert stored.video_id in capsys.readouterr().out
    assert video_runtime.videos().get(stored.video_id) is None
    assert stored_keys(video_runtime.settings.resolved_store_dir) == []
    assert delete("--video", stored.video_id) == 1
    assert f"no video {stored.video_id}" in capsys.readouterr().err
