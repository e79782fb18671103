"""Exports of what a history filter shows, from the module, the API and the CLI.

Four real photos go through the real networks into a SQLite database and a local folder store; the
exports are read back with pandas, a COCO schema and ``zipfile``.
"""

from __future__ import annotations

import io
import json
import zipfile

import jsonschema
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from picmetric_core import cli, exports
from picmetric_core.api.app import create_app
from picmetric_core.config import get_settings
from picmetric_core.filters import DisplayThresholds, shown
from picmetric_core.history import HistoryQuery
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.service import PicMetricService
from tests.support.exports import TOKEN

# What a COCO detection dataset must hold (the fields pycocotools reads), with the face keypoints.
COCO_SCHEMA = {
    "type": "object",
    "required": ["images", "annotations", "categories"],
    "properties": {
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "file_name", "width", "height"],
                "properties": {"id": {"type": "integer"}, "width": {"type": "integer", "minimum": 1}},
            },
        },
        "annotations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "image_id", "category_id", "bbox", "area", "iscrowd"],
                "properties": {
                    "bbox": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 4, "maxItems": 4},
                    "iscrowd": {"enum": [0, 1]},
                    "keypoints": {"type": "array", "items": {"type": "number"}, "minItems": 15, "maxItems": 15},
                },
            },
        },
        "categories": {
            "type": "array",
            "items": {"type": "object", "required": ["id", "name", "supercategory"]},
        },
    },
}


def _by_filter(service: PicMetricService, **filters) -> set[str]:
    return {item.record.md5 for item in service.history(HistoryQuery(limit=200, **filters)).items}


@pytest.mark.slow
def test_csv_has_a_row_per_class_object_and_face_of_what_the_filter_shows(stored):
    _, service, md5s = stored
    query = HistoryQuery(label="dog", label_kind="detector")
    thresholds = DisplayThresholds(min_detection_score=0.5)
    table = pd.read_csv(io.BytesIO(exports.export(service, query, "csv", thresholds)))
    assert set(table["md5"]) == _by_filter(service, label="dog", label_kind="detector")
    assert set(table["md5"]) == {md5s["dog.jpg"], md5s["person.jpg"]}
    for md5 in table["md5"].unique():
        analysis = service.get(md5).analysis
        rows = table[table["md5"] == md5]
        objects = rows[rows["kind"] == "object"]
        assert len(rows[rows["kind"] == "class"]) == len(analysis.classifications)
        assert (objects["score"] >= 0.5).all()
        assert sorted(objects["label"]) == sorted(d.label for d in shown(analysis, thresholds).detections)
    # person.jpg's sheep is under 50 %: not in the export.
    assert "sheep" not in set(table["label"])


@pytest.mark.slow
def test_face_rows_carry_their_five_landmarks(stored):
    _, service, md5s = stored
    table = pd.read_csv(io.BytesIO(exports.export(service, HistoryQuery(has_faces=True), "csv")))
    assert set(table["md5"]) == {md5s["astronaut.png"]}
    face = table[table["kind"] == "face"].iloc[0]
    stored_face = service.get(md5s["astronaut.png"]).analysis.faces[0]
    assert face["left_eye_x"] == pytest.approx(stored_face.landmarks["left_eye"].x)
    assert face["x2"] == pytest.approx(stored_face.box.x2)


@pytest.mark.slow
def test_coco_export_is_a_valid_dataset_with_official_ids_and_face_keypoints(stored):
    _, service, md5s = stored
    dataset = json.loads(exports.export(service, HistoryQuery(), "coco"))
    jsonschema.validate(dataset, COCO_SCHEMA)
    assert {image["md5"] for image in dataset["images"]} == set(md5s.values())
    names = {category["id"]: category["name"] for category in dataset["categories"]}
    assert names[18] == "dog" and names[63] == "couch" and names[72] == "tv"
    ids = {image["md5"]: image["id"] for image in dataset["images"]}
    dogs = [a for a in dataset["annotations"] if a["image_id"] == ids[md5s["dog.jpg"]] and a["category_id"] == 18]
    detection = next(d for d in service.get(md5s["dog.jpg"]).analysis.detections if d.label == "dog")
    x, y, width, height = dogs[0]["bbox"]
    assert (x, y, x + width, y + height) == pytest.approx(detection.box.as_list())
    faces = [a for a in dataset["annotations"] if a["category_id"] == exports.FACE_CATEGORY["id"]]
    assert [a["image_id"] for a in faces] == [ids[md5s["astronaut.png"]]]
    assert faces[0]["num_keypoints"] == 5 and faces[0]["keypoints"][2::3] == [2] * 5


@pytest.mark.slow
def test_zip_holds_originals_overlays_and_the_annotations(stored, dog_jpg):
    _, service, md5s = stored
    dog = md5s["dog.jpg"]
    assert not service.store.exists(f"{dog}/detections.png")  # analysing draws no overlay
    archive = zipfile.ZipFile(io.BytesIO(exports.export(service, HistoryQuery(filename="dog"), "zip")))
    names = set(archive.namelist())
    assert {f"{dog}/original.jpg", f"{dog}/detections.png", f"{dog}/faces.png", "results.csv"} <= names
    assert archive.read(f"{dog}/original.jpg") == dog_jpg
    # The overlay was drawn for the export (boxes over the photo) and kept for the next ask.
    boxes = np.asarray(Image.open(io.BytesIO(archive.read(f"{dog}/detections.png"))).convert("RGB"), np.int16)
    photo = np.asarray(Image.open(io.BytesIO(dog_jpg)).convert("RGB"), np.int16)
    assert boxes.shape == photo.shape and (np.abs(boxes - photo).max(axis=2) > 60).mean() > 0.005
    assert service.store.get(f"{dog}/detections.png") == archive.read(f"{dog}/detections.png")
    assert not any(name.startswith(md5s["eagle.jpg"]) for name in names)
    dataset = json.loads(archive.read("annotations.json"))
    assert all(image["file_name"] in names for image in dataset["images"])


@pytest.mark.slow
def test_api_exports_with_the_history_filters_and_the_token(stored):
    settings, _, md5s = stored
    client = TestClient(create_app(settings, loader=ModelLoader(settings)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = client.get("/v1/analyses/export", params={"format": "csv", "has_faces": "true"}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert set(pd.read_csv(io.BytesIO(response.content))["md5"]) == {md5s["astronaut.png"]}
    coco = client.get("/v1/analyses/export", params={"format": "coco", "label": "bird"}, headers=auth).json()
    assert [image["md5"] for image in coco["images"]] == [md5s["eagle.jpg"]]
    archive = client.get("/v1/analyses/export", params={"format": "zip", "md5": md5s["eagle.jpg"][:6]}, headers=auth)
    assert archive.headers["content-length"] == str(len(archive.content))
    assert f"{md5s['eagle.jpg']}/original.jpg" in zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert client.get("/v1/analyses/export", params={"format": "csv"}).status_code == 401
    refused = client.get("/v1/analyses/export", params={"format": "xlsx"}, headers=auth)
    assert refused.status_code == 422 and "format" in refused.json()["error"]


@pytest.mark.slow
def test_an_export_larger_than_its_limit_asks_for_narrower_filters(stored):
    _, service, _ = stored
    with pytest.raises(exports.ExportTooLarge, match="narrow the filters"):
        exports.collect(service, HistoryQuery(), max_analyses=3)
    assert len(exports.collect(service, HistoryQuery(), max_analyses=4)) == 4


@pytest.mark.slow
def test_cli_writes_the_export_file(stored, tmp_path, monkeypatch, capsys):
    settings, _, md5s = stored
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PICMETRIC_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    try:
        out = tmp_path / "people.json"
        assert cli.main(["export", "--format", "coco", "--label", "person", "--out", str(out)]) == 0
        with pytest.raises(SystemExit):
            cli.main(["export", "--since", "not-a-date", "--out", str(tmp_path / "never.csv")])
    finally:
        get_settings.cache_clear()
    dataset = json.loads(out.read_text())
    assert {image["md5"] for image in dataset["images"]} == {md5s["person.jpg"]}
    assert "wrote" in capsys.readouterr().out
