"""Overlays are drawn when someone asks for them, not when a photo is analysed, and kept once drawn.

Every way to an overlay is tried as a client uses it — the local store's ``/objects/…``, the stable links
of v1 bodies and of the old API (``yolov3_source``, ``faces_source``, with a token's ``sig``), the
redirect to a presigned S3 link, a public-read bucket's own URL, the ZIP export — on the real app, a
real SQLite file, folder and SeaweedFS bucket. The networks are a stand-in whose one box and one face
are known, so the drawing itself can be checked pixel by pixel.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

from picmetric_core.api.app import create_app
from picmetric_core.config import Settings
from picmetric_core.intake.images import DecodedImage
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.overlays import FACE_COLOR, LANDMARK_COLORS, class_color
from picmetric_core.results import Analysis, Box, Classification, Detection, Face, ModelInfo, Point
from tests.support.photos import png_bytes
from tests.support.services import make_settings, s3_settings

TOKEN = "overlay-token-" + "x" * 20
CAT = Detection("cat", 15, 0.9, Box(50, 40, 300, 260))
NOSE = Point(170, 120)
FACE = Face(0.99, Box(120, 60, 220, 170), {name: NOSE for name in LANDMARK_COLORS})
PHOTO = png_bytes(data.chelsea())  # 451 × 300


class StandIn:
    """No network: one cat and one face, where this module checks for them."""

    models = (ModelInfo("classifier", "stand-in", "none", False),)

    def analyze(self, image: DecodedImage, on_stage=None) -> Analysis:
        return Analysis(
            image.md5, image.width, image.height, (Classification("tabby", 281, 0.9),), (CAT,), (FACE,), self.models
        )


def app_client(settings: Settings, **headers: str) -> TestClient:
    loader = ModelLoader(settings, load=lambda _settings: StandIn())
    return TestClient(create_app(settings, loader=loader), raise_server_exceptions=False, headers=headers)


def pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"), np.int16)


def assert_cat_boxed(png: bytes) -> None:
    """The photo's size, and the cat's box drawn in its class colour down its left side."""
    drawn = pixels(png)
    assert drawn.shape == (300, 451, 3)
    left_side = drawn[90:240, int(CAT.box.x1)]
    assert np.abs(left_side - class_color(CAT.class_id)).max() < 40


def assert_face_marked(png: bytes) -> None:
    drawn = pixels(png)
    assert drawn.shape == (300, 451, 3)
    assert np.abs(drawn[int(NOSE.y), int(NOSE.x)] - LANDMARK_COLORS["mouth_right"]).max() < 40  # drawn last
    assert np.abs(drawn[100:150, int(FACE.box.x1)] - FACE_COLOR).max() < 40


def stored_overlays(store: Path, md5: str) -> list[str]:
    return sorted(path.name for path in (store / md5).glob("*.png") if path.stem in ("detections", "faces"))


def test_analysing_draws_nothing_and_the_first_ask_draws_and_keeps_each_overlay(tmp_path):
    with app_client(make_settings(tmp_path)) as client:
        body = client.post("/v1/analyses", files={"file": ("chelsea.png", PHOTO, "image/png")}).json()
        md5, store = body["md5"], tmp_path / "store"
        assert stored_overlays(store, md5) == []

        objects_link = client.get(body["urls"]["detections"])  # the v1 body's stable link
        assert objects_link.status_code == 200 and objects_link.headers["content-type"] == "image/png"
        assert_cat_boxed(objects_link.content)
        assert stored_overlays(store, md5) == ["detections.png"]  # kept under its key
        assert (store / md5 / "detections.png").read_bytes() == objects_link.content
        drawn_at = (store / md5 / "detections.png").stat().st_mtime_ns

        faces = client.get(f"/objects/{md5}/faces.png")  # the local store's route draws too
        assert faces.status_code == 200
        assert_face_marked(faces.content)
        assert stored_overlays(store, md5) == ["detections.png", "faces.png"]

        again = client.get(f"/objects/{md5}/detections.png")
        assert again.content == objects_link.content
        assert (store / md5 / "detections.png").stat().st_mtime_ns == drawn_at  # read back, not drawn again


def test_an_analysis_stored_with_its_overlays_serves_them_as_they_are(tmp_path):
    with app_client(make_settings(tmp_path)) as client:
        md5 = client.post("/v1/analyses", files={"file": ("chelsea.png", PHOTO)}).json()["md5"]
        earlier = png_bytes(np.full((30, 40, 3), 7, np.uint8))  # what an analysis stored before kept
        (tmp_path / "store" / md5 / "detections.png").write_bytes(earlier)

        assert client.get(f"/v1/analyses/{md5}/detections").content == earlier
        assert client.get(f"/objects/{md5}/detections.png").content == earlier


def test_the_old_apis_overlay_links_open_drawn_overlays_with_their_signature(tmp_path):
    with app_client(make_settings(tmp_path, api_token=TOKEN), Authorization=f"Bearer {TOKEN}") as client:
        old = client.post("/do_data_science", files={"file": ("chelsea.png", PHOTO, "image/png")}).json()
        assert "sig=" in old["yolov3_source"] and "sig=" in old["faces_source"]

        anonymous = TestClient(client.app)  # an <img src> sends no token: the link's sig opens it
        assert_cat_boxed(anonymous.get(old["yolov3_source"]).content)
        assert_face_marked(anonymous.get(old["faces_source"]).content)
        assert anonymous.get(f"/v1/analyses/{old['hash']}/detections").status_code == 401


def test_the_zip_export_holds_the_overlays_and_keeps_them(tmp_path):
    with app_client(make_settings(tmp_path)) as client:
        md5 = client.post("/v1/analyses", files={"file": ("chelsea.png", PHOTO)}).json()["md5"]
        archive = zipfile.ZipFile(io.BytesIO(client.get("/v1/analyses/export", params={"format": "zip"}).content))

        assert "missing.txt" not in archive.namelist()
        assert_cat_boxed(archive.read(f"{md5}/detections.png"))
        assert_face_marked(archive.read(f"{md5}/faces.png"))
        assert stored_overlays(tmp_path / "store", md5) == ["detections.png", "faces.png"]


def test_a_deleted_analysis_has_no_overlay_to_draw(tmp_path):
    with app_client(make_settings(tmp_path)) as client:
        md5 = client.post("/v1/analyses", files={"file": ("chelsea.png", PHOTO)}).json()["md5"]
        assert client.get(f"/v1/analyses/{md5}/faces").status_code == 200
        assert client.delete(f"/v1/analyses/{md5}").status_code == 204

        assert client.get(f"/v1/analyses/{md5}/detections").status_code == 404
        assert client.get(f"/objects/{md5}/detections.png").status_code == 404
        assert not (tmp_path / "store" / md5).exists()  # the drawn one went with the rest; nothing drawn since


def test_on_s3_the_link_redirects_to_an_overlay_drawn_before_the_redirect(tmp_path, seaweed, bucket):
    with app_client(s3_settings(tmp_path, seaweed, bucket)) as client:
        md5 = client.post("/v1/analyses", files={"file": ("chelsea.png", PHOTO)}).json()["md5"]
        listed = seaweed.client().list_objects_v2(Bucket=bucket, Prefix=f"{md5}/").get("Contents", [])
        assert sorted(item["Key"].split("/")[1] for item in listed) == ["analysis.json", "original.png", "thumb.jpg"]

        redirect = client.get(f"/v1/analyses/{md5}/detections", follow_redirects=False)
        assert redirect.status_code == 307
        presigned = requests.get(redirect.headers["location"], timeout=10)  # straight from the bucket
        assert presigned.status_code == 200 and presigned.headers["Content-Type"] == "image/png"
        assert_cat_boxed(presigned.content)


def test_a_public_read_bucket_gets_the_overlays_before_the_old_api_hands_out_their_urls(tmp_path, seaweed, bucket):
    location = f"http://{bucket}.s3.example.com/"
    settings = s3_settings(
        tmp_path, seaweed, bucket, s3_location=location, s3_extra_args={"ACL": "public-read"}
    )
    with app_client(settings) as client:
        old = client.post("/do_data_science", files={"file": ("chelsea.png", PHOTO, "image/png")}).json()

    md5 = old["hash"]
    assert old["yolov3_source"] == f"{location}{md5}/detections.png"
    assert old["faces_source"] == f"{location}{md5}/faces.png"
    s3 = seaweed.client()
    for kind in ("detections", "faces"):  # already in the bucket when the URL was handed out
        assert s3.head_object(Bucket=bucket, Key=f"{md5}/{kind}.png")["ContentType"] == "image/png"
    assert_cat_boxed(s3.get_object(Bucket=bucket, Key=f"{md5}/detections.png")["Body"].read())


@pytest.mark.parametrize("kind", ["detections", "faces"])
def test_two_asks_at_once_draw_once(tmp_path, kind):
    from concurrent.futures import ThreadPoolExecutor

    with app_client(make_settings(tmp_path)) as client:
        md5 = client.post("/v1/analyses", files={"file": ("chelsea.png", PHOTO)}).json()["md5"]
        service = client.app.state.runtime.service()
        drawn: list[str] = []
        render = service._render
        service._render = lambda image, analysis, which: drawn.append(which) or render(image, analysis, which)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: client.get(f"/v1/analyses/{md5}/{kind}"), range(4)))

        assert [answer.status_code for answer in answers] == [200] * 4
        assert len({answer.content for answer in answers}) == 1
        assert drawn == [kind]
