"""One serialization: the app's downloads, the API's bodies and the CLI's documents come from views.py."""

from __future__ import annotations

import json

import pytest

from picmetric_core.filters import DisplayThresholds
from picmetric_core.formats import CONTENT_TYPE_BY_EXTENSION, IMAGE_FORMATS
from picmetric_core.intake.images import CONTENT_TYPES, decode_for
from picmetric_core.store.objects import ObjectKeys, content_type_of
from picmetric_core.views import legacy_submission_document, submission_document, to_json


@pytest.fixture
def app_and_service(tmp_path, analyzer):
    from fastapi.testclient import TestClient

    from picmetric_core.api import create_app
    from picmetric_core.lifecycle import ModelLoader
    from tests.support.services import make_settings

    settings = make_settings(tmp_path)
    app = create_app(settings, loader=ModelLoader(settings, load=lambda _settings: analyzer))
    with TestClient(app) as client:
        yield client, app.state.runtime.service(), settings


@pytest.mark.slow
def test_the_apps_full_download_is_the_apis_v1_body(app_and_service, dog_jpg):
    client, service, _settings = app_and_service
    thresholds = DisplayThresholds(min_detection_score=0.3, nms_iou=0.5, min_face_score=0.95)
    created = client.post("/v1/analyses", files={"file": ("dog.jpg", dog_jpg, "image/jpeg")})
    assert created.status_code == 201
    submission = service.get(created.json()["md5"])
    query = "min_detection_score=0.3&nms_iou=0.5&min_face_score=0.95"
    body = client.get(f"/v1/analyses/{submission.record.md5}?{query}").json()

    download = json.loads(to_json(submission_document(submission, thresholds=thresholds), indent=2))
    # A local store has no links of its own: the API links to its /objects route, the app has none.
    assert set(body.pop("urls")) == set(download.pop("urls")) == {"original", "detections", "faces", "thumbnail"}
    assert body == download
    assert body["seen_before"] is True and body["record"]["filename"] == "dog.jpg"
    assert body["shown"]["thresholds"] == {"min_detection_score": 0.3, "nms_iou": 0.5, "min_face_score": 0.95}


@pytest.mark.slow
def test_the_old_shape_names_unlinked_objects_by_key(app_and_service, dog_jpg):
    client, service, settings = app_and_service
    submission = service.submit(decode_for(settings, dog_jpg), source="upload", filename="dog.jpg")
    document = legacy_submission_document(submission)
    assert document["original"] == submission.record.keys.original
    assert document["yolov3_source"] == submission.record.keys.detections
    old = client.post("/do_data_science", files={"file": ("dog.jpg", dog_jpg, "image/jpeg")}).json()
    assert {k: v for k, v in old.items() if k not in ("original", "yolov3_source", "faces_source")} == {
        k: v for k, v in document.items() if k not in ("original", "yolov3_source", "faces_source")
    }
    assert old["original"].endswith(f"/v1/analyses/{submission.record.md5}/original")  # a link that never expires


def test_one_format_table_for_intake_store_and_api():
    from picmetric_core.api.routes.objects import OBJECT_KEY

    md5 = "0" * 32
    for image_format in IMAGE_FORMATS:
        assert CONTENT_TYPES[image_format.name] == image_format.content_type
        key = ObjectKeys.for_image(md5, image_format.content_type).original
        assert key == f"{md5}/original.{image_format.extension}"
        assert content_type_of(key) == image_format.content_type
        assert OBJECT_KEY.fullmatch(key)
    assert set(CONTENT_TYPE_BY_EXTENSION.values()) == set(CONTENT_TYPES.values())
    assert OBJECT_KEY.fullmatch(ObjectKeys.for_image(md5, "image/x-unknown").original)
    assert not OBJECT_KEY.fullmatch(f"{md5}/original.exe")


@pytest.mark.slow
def test_every_v1_body_is_the_documented_schema(app_and_service, dog_jpg, astronaut_png):
    from picmetric_core.api.schemas import AnalysisBody, AnalysisPageBody, HealthBody

    client, _service, _settings = app_and_service
    created = client.post("/v1/analyses", files={"file": ("astronaut.png", astronaut_png, "image/png")})
    again = client.post("/v1/analyses", files={"file": ("astronaut.png", astronaut_png, "image/png")})
    assert (created.status_code, again.status_code) == (201, 200)
    for response in (created, again, client.get(f"/v1/analyses/{created.json()['md5']}")):
        AnalysisBody.model_validate(response.json())  # extra fields are refused too
    assert len(created.json()["faces"]) == 1
    page = AnalysisPageBody.model_validate(client.get("/v1/analyses?with_total=true").json())
    assert page.total == 1 and page.items[0].md5 == created.json()["md5"]
    assert HealthBody.model_validate(client.get("/healthz").json()).networks.state == "ready"
    documented = client.get("/openapi.json").json()["paths"]
    assert documented["/v1/analyses"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AnalysisBody"
    }
