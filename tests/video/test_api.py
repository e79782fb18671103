"""``/v1/videos``: 202 and a job id, polled until done, the result with its links; the token and the limits."""

from __future__ import annotations

import io
import time

import av
import pytest

from tests.support.api import app_client
from tests.support.services import make_settings
from tests.support.videos import Sprite, audio_only, horse_patch, make_clip
from tests.video.conftest import CENTRE_LINE

TOKEN = "video-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path, analyzer, empty_models_dir):
    settings = make_settings(tmp_path, models_dir=empty_models_dir, api_token=TOKEN, video_max_bytes=2_000_000)
    with app_client(settings, analyzer) as client:
        yield client


@pytest.mark.slow
def test_a_clip_is_accepted_polled_and_its_result_linked(client, horse_and_face_clip):
    line = f"{CENTRE_LINE.start.x},{CENTRE_LINE.start.y},{CENTRE_LINE.end.x},{CENTRE_LINE.end.y}"
    answer = client.post(
        "/v1/videos", files={"file": ("walk.mp4", horse_and_face_clip)}, data={"line": line}, headers=AUTH
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["job_id"].startswith("job_") and job["state"] in ("queued", "running")
    deadline = time.monotonic() + 120
    while job["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
        job = client.get(f"/v1/videos/{job['job_id']}", headers=AUTH).json()
        assert 0.0 <= job["progress"] <= 1.0
    assert job["state"] == "done", job["error"]
    result = job["result"]
    assert result["video_id"] == job["video_id"] and result["filename"] == "walk.mp4"
    assert {"horse", "face"} <= {track["label"] for track in result["tracks"]}
    assert {"label": "horse", "inward": 0, "outward": 1} in result["counts"]
    annotated = client.get(result["links"]["annotated"].removeprefix("http://testserver"), headers=AUTH)
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(annotated.content)) as clip:
        assert clip.streams.video[0].codec_context.name == "h264" and clip.streams.audio
    assert client.get(f"/v1/videos/{result['video_id']}", headers=AUTH).json()["tracks"] == result["tracks"]
    listed = client.get("/v1/videos", params={"label": "horse"}, headers=AUTH).json()["items"]
    assert [item["video_id"] for item in listed] == [result["video_id"]]
    assert client.get("/v1/videos", params={"label": "zebra"}, headers=AUTH).json()["items"] == []
    assert client.delete(f"/v1/videos/{result['video_id']}", headers=AUTH).status_code == 204
    assert client.get(f"/v1/videos/{result['video_id']}", headers=AUTH).status_code == 404


def test_without_the_token_nothing_is_read_or_started(tmp_path):
    settings = make_settings(tmp_path, api_token=TOKEN)
    with app_client(settings) as client:
        assert client.post("/v1/videos", files={"file": ("a.mp4", b"x" * 100)}).status_code == 401
        assert client.get("/v1/videos").status_code == 401
        assert client.get("/v1/videos/job_0123456789abcdef").status_code == 401


def test_bad_clips_and_requests_get_clear_json_errors(tmp_path):
    settings = make_settings(tmp_path, api_token=TOKEN, video_max_bytes=50 * 1024)
    with app_client(settings) as client:
        audio = client.post("/v1/videos", files={"file": ("song.m4a", audio_only())}, headers=AUTH)
        assert audio.status_code == 422 and "audio only" in audio.json()["error"]
        big = client.post("/v1/videos", files={"file": ("big.mp4", b"\x00" * 200_000)}, headers=AUTH)
        assert big.status_code == 413 and "50 KB" in big.json()["error"]
        both = client.post("/v1/videos", headers=AUTH)
        assert both.status_code == 422 and "exactly one" in both.json()["error"]
        refused = client.post("/v1/videos", data={"url": "http://127.0.0.1/clip.mp4"}, headers=AUTH)
        assert refused.status_code == 422 and "loopback" in refused.json()["error"]
        line = client.post("/v1/videos", data={"url": "https://example.com/a.mp4", "line": "1,2,3"}, headers=AUTH)
        assert line.status_code == 422 and "x1,y1,x2,y2" in line.json()["error"]
        assert client.get("/v1/videos/job_unknown", headers=AUTH).status_code == 404
        assert client.get("/v1/videos/not-an-id", headers=AUTH).status_code == 404
        assert client.get("/v1/videos", headers=AUTH).json()["items"] == []


@pytest.mark.slow
def test_a_clips_signed_links_play_without_the_header_and_nothing_else_opens_them(tmp_path, client, analyzer):
    clip = make_clip([Sprite(horse_patch(0.5), (-10, 40), (300, 60))], seconds=1.0, fps=10, size=(320, 180))
    stored = client.app.state.runtime.videos().analyze_file(clip, "walk.mp4", sample_fps=5.0)
    links = client.get(f"/v1/videos/{stored.video_id}", headers=AUTH).json()["links"]
    annotated = links["annotated"].removeprefix("http://testserver")
    assert "sig=" in annotated and TOKEN not in annotated
    unsigned = annotated.split("?")[0]

    assert client.get(unsigned).status_code == 401  # a link without its signature needs the header
    assert client.get(unsigned, headers=AUTH).status_code == 200
    played = client.get(annotated)  # what a <video src> sends: no header
    assert played.status_code == 200 and played.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(played.content)) as video:
        assert video.streams.video[0].codec_context.name == "h264"
    part = client.get(annotated, headers={"Range": "bytes=0-99"})  # how a player asks for the clip
    assert part.status_code == 206 and part.content == played.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(played.content)}"
    poster = client.get(links["poster"].removeprefix("http://testserver"))
    assert poster.status_code == 200 and poster.content[:3] == b"\xff\xd8\xff"
    assert client.get(links["original"].removeprefix("http://testserver")).content == clip

    signature = annotated.split("sig=")[1]
    altered = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert client.get(f"{unsigned}?sig={altered}").status_code == 401
    poster_signature = links["poster"].split("sig=")[1]
    assert client.get(f"{unsigned}?sig={poster_signature}").status_code == 401  # one object's link opens only it
    photo_link = f"/v1/analyses/{stored.video_id}/original?sig={links['original'].split('sig=')[1]}"
    assert client.get(photo_link).status_code == 401  # nor a photo's of the same md5
    # Links expire when the token changes (as photos' do): the old signature opens nothing on the new server.
    renewed = make_settings(tmp_path, models_dir=client.app.state.runtime.settings.models_dir, api_token="new-token")
    with app_client(renewed, analyzer) as after_rotation:
        assert after_rotation.get(annotated).status_code == 401
        assert after_rotation.get(unsigned, headers={"Authorization": "Bearer new-token"}).status_code == 200
