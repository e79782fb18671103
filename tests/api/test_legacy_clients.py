"""Old clients work unchanged: the old front end's request from another origin, COCO names, the old
threshold, links that outlive their presigned URLs, and the old routes.

One real uvicorn server (SQLite, the real SeaweedFS bucket with 2-second presigned links, one allowed
browser origin, no token as in the old deployment) serves the module; the old front end's request is
made by real Chromium from a page on another local HTTP server.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select

from picmetric_core.api.app import create_app
from picmetric_core.config import Settings
from picmetric_core.intake.images import decode_for
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.models.coco import COCO_CATEGORIES, DARKNET_RENAMES
from picmetric_core.models.yolo import read_labels
from picmetric_core.store.database import alembic_config, create_database_engine, session_factory
from picmetric_core.store.orm import DetectionRow
from tests.support.api import Server, start_server, stop_server
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, LOOPBACK_HOSTS
from tests.support.photos import darknet_photo
from tests.support.rows import make_analysis, make_row
from tests.support.services import make_settings

PRESIGN_EXPIRY_S = 2
LEGACY_FIELDS = {"error", "hash", "original", "resnet", "yolov3", "yolov3_source", "faces_source"}

# The old front end's page: axios-style multipart with its `timeout` header, then JSON.parse of the
# two JSON-string fields as the old front end's reducer did.
OLD_FRONT_END = """<!doctype html><meta charset="utf-8"><title>old front end</title>
<script>
async function dsSubmit(api) {
  const photo = await (await fetch("dog.jpg")).blob();
  const form = new FormData();
  form.append("file", photo, "dog.jpg");
  const response = await fetch(api + "/do_data_science", {
    method: "POST",
    body: form,
    headers: {"Accept": "application/json, text/plain, */*", "timeout": "120000"},
  });
  const data = await response.json();
  return {status: response.status, data, resnet: JSON.parse(data.resnet), yolov3: JSON.parse(data.yolov3)};
}
</script>
"""


@pytest.fixture(scope="module")
def front_end(tmp_path_factory, dog_jpg: bytes) -> Iterator[int]:
    """A second local HTTP server (another origin) with the old front end's page; yields its port."""
    folder = tmp_path_factory.mktemp("front_end")
    (folder / "index.html").write_text(OLD_FRONT_END)
    (folder / "dog.jpg").write_bytes(dog_jpg)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, empty_models_dir: Path, seaweed, front_end: int) -> Iterator[Server]:
    """The API on a private SeaweedFS bucket of its own (2-second presigned links), for the old front end's origin."""
    bucket = f"picmetric-legacy-{secrets.token_hex(4)}"
    s3 = seaweed.client()
    s3.create_bucket(Bucket=bucket)
    try:
        running = start_server(
            tmp_path_factory.mktemp("legacy_api"),
            empty_models_dir,
            S3_BUCKET=bucket,
            S3_KEY=seaweed.access_key,
            S3_SECRET=seaweed.secret_key,
            S3_ENDPOINT_URL=seaweed.endpoint_url,
            PICMETRIC_PRESIGN_EXPIRY_S=str(PRESIGN_EXPIRY_S),
            PICMETRIC_CORS_ORIGINS=f"http://127.0.0.1:{front_end}",
        )
        yield running
        stop_server(running)
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http_client:
        yield http_client


@pytest.mark.browser
@pytest.mark.slow
def test_old_front_end_request_passes_a_real_preflight_from_another_origin(server, front_end, dog_jpg):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            # Watched, not routed: with request interception on, Chromium sends no CORS preflight.
            asked: list[str] = []
            page.on("request", lambda request: asked.append(request.url))
            page.goto(f"http://127.0.0.1:{front_end}/index.html")
            result = page.evaluate("api => dsSubmit(api)", server.url)
            # The same page from an origin nobody configured is refused by the browser.
            page.goto(f"http://localhost:{front_end}/index.html")
            refused = page.evaluate("api => dsSubmit(api).then(() => 'allowed', error => error.name)", server.url)
        finally:
            browser.close()
    assert result["status"] == 200
    assert set(result["data"]) == LEGACY_FIELDS
    assert result["data"]["hash"] == hashlib.md5(dog_jpg).hexdigest()
    assert result["resnet"] and all(0 < float(score) <= 1 for score in result["resnet"].values())
    assert "dog" in result["yolov3"]
    assert refused == "TypeError"
    assert all(urlsplit(url).hostname in LOOPBACK_HOSTS for url in asked), asked
    # The browser asked first: the `timeout` header is not a simple header.
    assert '"OPTIONS /do_data_science HTTP/1.1" 200' in server.log.read_text()


@pytest.mark.slow
def test_old_shape_lists_objects_from_50_percent_with_short_fields(client, astronaut_png):
    horses = darknet_photo("horses.jpg").read_bytes()
    body = client.post("/do_data_science", files={"file": ("horses.jpg", horses, "image/jpeg")}).json()
    md5 = body["hash"]
    at_half = client.get(f"/v1/analyses/{md5}", params={"min_detection_score": 0.5}).json()
    at_default = client.get(f"/v1/analyses/{md5}").json()
    yolo = json.loads(body["yolov3"])
    assert set(yolo) == {d["label"] for d in at_half["shown"]["detections"]}
    assert all(float(percent) >= 50 for percent in yolo.values())
    # v1 keeps its 25 % default: on this photo it also shows weaker animals the old shape leaves out.
    weaker = [d for d in at_default["shown"]["detections"] if d["score"] < 0.5]
    assert weaker and len(at_default["shown"]["detections"]) > len(at_half["shown"]["detections"])
    # The old back end keeps every field in a 255-character column.
    assert all(len(value) <= 255 for value in body.values())
    # Nothing at 50 % on the astronaut: null, as the old API said.
    astronaut = client.post("/do_data_science", files={"file": ("a.png", astronaut_png, "image/png")}).json()
    assert astronaut["yolov3"] is None
    assert all(value is None or len(value) <= 255 for value in astronaut.values())


@pytest.mark.slow
def test_bodies_hand_out_kept_links_that_name_no_store_and_outlive_presigned_ones(client, seaweed, dog_jpg):
    body = client.post("/do_data_science", files={"file": ("dog.jpg", dog_jpg, "image/jpeg")}).json()
    v1 = client.get(f"/v1/analyses/{body['hash']}")
    links = v1.json()["urls"]
    assert links["original"] == f"{str(client.base_url).rstrip('/')}/v1/analyses/{body['hash']}/original"
    store_port = seaweed.endpoint_url.rsplit(":", 1)[1]
    for detail in (store_port, seaweed.access_key, "picmetric-legacy-", "X-Amz-", "Signature="):
        assert detail not in v1.text, f"{detail!r} is in a v1 body"
    presigned = httpx.get(links["original"]).headers["location"]  # made fresh for this request
    assert httpx.get(presigned).content == dog_jpg
    time.sleep(PRESIGN_EXPIRY_S + 1.5)
    assert httpx.get(presigned).status_code == 403  # the store's own link has expired
    for kept_link in (links["original"], body["original"]):
        kept = httpx.get(kept_link, follow_redirects=True)
        assert kept.status_code == 200 and kept.content == dog_jpg
    overlay = httpx.get(body["yolov3_source"], follow_redirects=True)
    assert overlay.status_code == 200 and overlay.content.startswith(b"\x89PNG")


@pytest.mark.slow
def test_links_use_the_configured_public_address(tmp_path, analyzer, dog_jpg):
    settings = make_settings(tmp_path, public_base_url="https://pics.example.org/api/")
    app_client = _in_process(settings, analyzer)
    body = app_client.post("/do_data_science", files={"file": ("dog.jpg", dog_jpg, "image/jpeg")}).json()
    assert body["original"] == f"https://pics.example.org/api/v1/analyses/{body['hash']}/original"


@pytest.mark.slow
def test_links_use_the_proxys_forwarded_host_only_when_trusted(tmp_path, analyzer, dog_jpg):
    upload = {"file": ("dog.jpg", dog_jpg, "image/jpeg")}
    proxy = {"X-Forwarded-Host": "pics.example.org", "X-Forwarded-Proto": "https"}
    hostile = {"X-Forwarded-Host": "evil.example/<script>", "X-Forwarded-Proto": "javascript"}
    trusting = _in_process(make_settings(tmp_path / "trusting", trust_forwarded_host=True), analyzer)
    default = _in_process(make_settings(tmp_path / "default"), analyzer)
    for app_client, headers, base in (
        (trusting, proxy, "https://pics.example.org"),
        (default, proxy, "http://testserver"),  # a client must not choose its links' host
        (trusting, hostile, "http://testserver"),  # not a host name: ignored
    ):
        body = app_client.post("/do_data_science", files=upload, headers=headers).json()
        assert body["original"] == f"{base}/v1/analyses/{body['hash']}/original"


@pytest.mark.slow
def test_with_a_token_links_are_signed_and_the_token_never_shows(tmp_path, analyzer, dog_jpg):
    token = "legacy-token-" + "y" * 20
    app_client = _in_process(make_settings(tmp_path, api_token=token), analyzer)
    auth = {"Authorization": f"Bearer {token}"}
    body = app_client.post("/do_data_science", files={"file": ("d.jpg", dog_jpg, "image/jpeg")}, headers=auth).json()
    assert token not in json.dumps(body)
    assert app_client.get(body["original"]).content == dog_jpg  # an <img src> sends no header
    unsigned = body["original"].split("?")[0]
    assert app_client.get(unsigned).status_code == 401
    assert app_client.get(unsigned, headers=auth).content == dog_jpg
    # A signature opens only the object it was made for.
    overlay_with_original_sig = body["yolov3_source"].split("?")[0] + "?" + body["original"].split("?")[1]
    refused = app_client.get(overlay_with_original_sig)
    assert refused.status_code == 401 and "error" in refused.json()


@pytest.mark.slow
def test_root_redirects_to_the_upload_page_whose_forms_post_to_real_routes(tmp_path, analyzer):
    app_client = _in_process(make_settings(tmp_path), analyzer)
    response = app_client.get("/", follow_redirects=False)
    assert response.status_code in (302, 307) and response.headers["location"] == "/upload"
    page = app_client.get("/")
    actions = [urljoin(str(page.url), part.split('"')[0]) for part in page.text.split('action="')[1:]]
    assert len(actions) == 2
    for action in actions:  # an empty form: the route exists and says what is missing
        answer = app_client.post(action)
        assert answer.status_code == 422 and "error" in answer.json(), action
    assert app_client.post("/reset").status_code in (404, 405)
    assert app_client.get("/reset").status_code == 404


@pytest.mark.slow
def test_every_detector_label_is_an_official_coco_name(analyzer, dog_jpg, person_jpg):
    assert read_labels() == tuple(category.name for category in COCO_CATEGORIES)
    assert not set(read_labels()) & set(DARKNET_RENAMES)
    settings = make_settings(Path("/unused"))
    analyses = [analyzer.analyze(decode_for(settings, photo)) for photo in (dog_jpg, person_jpg)]
    found = {d.label for analysis in analyses for d in analysis.detections}
    assert {"dog", "person", "bicycle"} <= found <= {category.name for category in COCO_CATEGORIES}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migration_renames_labels_already_stored(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_pg_url")
    engine = create_database_engine(make_settings(tmp_path, database_url=url))
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    old = make_analysis("old", objects=[("sofa", 0.9), ("tvmonitor", 0.7), ("dog", 0.6), ("pottedplant", 0.5)])
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(make_row(old, "old.jpg", datetime.now(UTC)))

    def labels() -> list[str]:
        with sessions() as session:
            return list(session.scalars(select(DetectionRow.label).order_by(DetectionRow.id)))

    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert labels() == ["couch", "tv", "dog", "potted plant"]
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    assert labels() == ["sofa", "tvmonitor", "dog", "pottedplant"]
    engine.dispose()


def _in_process(settings: Settings, analyzer) -> TestClient:
    """The app in this process on the session's networks (no lifespan: nothing loads twice)."""
    app = create_app(settings, loader=ModelLoader(settings, load=lambda _settings: analyzer))
    return TestClient(app, base_url="http://testserver")
