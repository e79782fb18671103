"""Real photos through the real networks: what a user would see in the results and overlays."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from picmetric_core.cli import main as cli_main
from picmetric_core.filters import DisplayThresholds, filter_detections, shown
from picmetric_core.intake.images import decode_image
from picmetric_core.models.engines import KERAS_FLOAT32
from picmetric_core.overlays import LANDMARK_COLORS, annotate_detections, render_overlays
from picmetric_core.pipeline import Analyzer
from picmetric_core.results import Analysis, Box, Detection
from picmetric_core.views import NO_FACES, full_view, legacy_view

pytestmark = pytest.mark.slow  # the real networks, loaded once per run

# Where the astronaut's features are in skimage's astronaut() (512×512), read off the photo.
ASTRONAUT_FEATURES = {
    "left_eye": (204, 100),
    "right_eye": (245, 102),
    "nose": (224, 126),
    "mouth_left": (202, 139),
    "mouth_right": (244, 140),
}


@pytest.fixture(scope="module")
def dog_analysis(limits, analyzer, dog_jpg) -> tuple:
    image = decode_image(dog_jpg, **limits)
    return image, analyzer.analyze(image)


@pytest.fixture(scope="module")
def astronaut_analysis(limits, analyzer, astronaut_png) -> tuple:
    image = decode_image(astronaut_png, **limits)
    return image, analyzer.analyze(image)


def test_dog_photo_shows_dog_bicycle_and_vehicle(dog_analysis):
    _, analysis = dog_analysis
    labels = {d.label for d in shown(analysis).detections}
    assert {"dog", "bicycle"} <= labels
    assert labels & {"car", "truck"}
    dog = next(d for d in shown(analysis).detections if d.label == "dog")
    # The dog sits in the lower left of the 768×576 photo.
    assert dog.box.x2 < analysis.width * 0.6 and dog.box.y1 > analysis.height * 0.3


def test_analysis_says_which_models_ran_and_how_long_each_took(dog_analysis):
    _, analysis = dog_analysis
    assert {m.role for m in analysis.models} == {"classifier", "detector", "faces"}
    assert analysis.model("detector").name.startswith("YOLOv3")
    assert analysis.model("classifier").weights
    assert {"classifier", "detector", "faces", "total"} <= set(analysis.timings_ms)
    assert all(ms > 0 for ms in analysis.timings_ms.values())


def test_astronaut_has_one_face_with_landmarks_on_eyes_nose_mouth(astronaut_analysis):
    _, analysis = astronaut_analysis
    faces = shown(analysis).faces
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.95
    for name, (x, y) in ASTRONAUT_FEATURES.items():
        point = face.landmarks[name]
        assert abs(point.x - x) <= 3 and abs(point.y - y) <= 3, (name, point)
        assert face.box.x1 <= point.x <= face.box.x2 and face.box.y1 <= point.y <= face.box.y2


def test_chelsea_is_a_cat(limits, analyzer):
    from skimage import data

    from tests.support.photos import png_bytes

    analysis = analyzer.analyze(decode_image(png_bytes(data.chelsea()), **limits))
    top3 = [c.label for c in analysis.classifications[:3]]
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top3), top3


def test_raw_results_refilter_without_rerunning(dog_analysis):
    _, analysis = dog_analysis
    loose = shown(analysis, DisplayThresholds(min_detection_score=0.1, nms_iou=0.9))
    strict = shown(analysis, DisplayThresholds(min_detection_score=0.5, nms_iou=0.45))
    assert len(loose.detections) > len(strict.detections)
    assert all(d.score >= 0.5 for d in strict.detections)


def test_class_wise_nms_keeps_separate_instances():
    people = [
        Detection("person", 0, 0.9, Box(0, 0, 10, 20)),
        Detection("person", 0, 0.8, Box(30, 0, 40, 20)),  # a second person: kept
        Detection("person", 0, 0.7, Box(1, 0, 11, 20)),  # a duplicate of the first: dropped
        Detection("dog", 16, 0.6, Box(0, 0, 10, 20)),  # another class in the same place: kept
    ]
    kept = filter_detections(people, min_score=0.25, nms_iou=0.45)
    assert [(d.label, d.score) for d in kept] == [("person", 0.9), ("person", 0.8), ("dog", 0.6)]


def test_overlays_are_pngs_of_the_photo_with_boxes_and_landmarks(astronaut_analysis, dog_analysis):
    image, analysis = astronaut_analysis
    overlays = render_overlays(image, analysis)
    faces_overlay = np.asarray(Image.open(io.BytesIO(overlays.faces_png)).convert("RGB"))
    assert faces_overlay.shape == image.rgb.shape
    nose = shown(analysis).faces[0].landmarks["nose"]
    assert tuple(faces_overlay[int(nose.y), int(nose.x)]) == LANDMARK_COLORS["nose"]

    dog_image, dog = dog_analysis
    boxes = np.asarray(Image.open(io.BytesIO(render_overlays(dog_image, dog).detections_png)).convert("RGB"))
    assert boxes.shape == dog_image.rgb.shape
    assert (boxes != dog_image.rgb).any(axis=2).mean() > 0.005  # boxes and labels were drawn


def test_label_at_the_top_edge_stays_inside_the_frame():
    rgb = np.full((120, 160, 3), 255, np.uint8)
    canvas = annotate_detections(rgb, [Detection("person", 0, 0.9, Box(100, 0, 160, 60))])
    changed_rows = np.nonzero((canvas != rgb).any(axis=(1, 2)))[0]
    changed_cols = np.nonzero((canvas != rgb).any(axis=(0, 2)))[0]
    assert changed_rows.min() == 0 and changed_cols.max() <= 159
    # The label's filled background lies inside the box's top-left area, not clipped away.
    assert (canvas[2:8, 102:140] != 255).any()


def test_legacy_view_keeps_the_old_api_shape(dog_analysis):
    _, analysis = dog_analysis
    view = legacy_view(analysis, original_url="o", detections_url="d", faces_url="f")
    assert set(view) == {"error", "hash", "original", "resnet", "yolov3", "yolov3_source", "faces_source"}
    assert view["hash"] == analysis.md5 and view["faces_source"] == NO_FACES
    yolo = json.loads(view["yolov3"])
    assert "dog" in yolo and 0 < float(yolo["dog"]) <= 100
    assert len(json.loads(view["resnet"])) == 3


def test_full_view_round_trips(dog_analysis):
    _, analysis = dog_analysis
    document = json.loads(json.dumps(full_view(analysis)))
    assert Analysis.from_dict(document) == analysis
    assert {d["label"] for d in document["shown"]["detections"]} >= {"dog", "bicycle"}


def test_cli_analyzes_good_inputs_and_reports_bad_ones(analyzer, tmp_path, capsys, monkeypatch, empty_models_dir):
    from tests.support.photos import darknet_photo

    monkeypatch.setenv("PICMETRIC_MODELS_DIR", str(empty_models_dir))
    from picmetric_core.config import get_settings

    get_settings.cache_clear()
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    out = tmp_path / "out"
    code = cli_main(["analyze", str(darknet_photo("dog.jpg")), str(not_an_image), "--json", "--out", str(out)])
    captured = capsys.readouterr()
    get_settings.cache_clear()
    assert code == 1
    documents = json.loads(captured.out)
    assert "dog" in {d["label"] for d in documents[0]["shown"]["detections"]}
    assert "not an image" in documents[1]["error"]
    assert "notes.txt" in captured.err and "Traceback" not in captured.err
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".png", ".png"]


def test_analyze_many_matches_one_at_a_time(limits, analyzer, dog_jpg, person_jpg, astronaut_png):
    images = [decode_image(data, **limits) for data in (dog_jpg, person_jpg, astronaut_png)]
    batched = analyzer.analyze_many(images, batch_size=2)
    for image, together in zip(images, batched, strict=True):
        alone = analyzer.analyze(image)
        assert together.md5 == alone.md5
        assert [c.label for c in together.classifications] == [c.label for c in alone.classifications]
        assert [d.label for d in shown(together).detections] == [d.label for d in shown(alone).detections]
        for a, b in zip(shown(together).detections, shown(alone).detections, strict=True):
            assert abs(a.score - b.score) < 1e-3 and a.box.iou(b.box) > 0.99
        assert len(together.faces) == len(alone.faces)


JAX_SCRIPT = """
import json, sys
from pathlib import Path
from picmetric_core.config import Settings
from picmetric_core.intake.images import decode_for
from picmetric_core.pipeline import load_analyzer
import keras
assert keras.backend.backend() == "jax"
settings = Settings(models_dir=sys.argv[1])
analyzer = load_analyzer(Path(sys.argv[1]), device_nms=settings.device_nms)
assert analyzer.detector.device_nms  # PICMETRIC_DEVICE_NMS=on: the GPU's path, here on JAX-CPU
docs = [analyzer.analyze(decode_for(settings, Path(p).read_bytes())).to_dict() for p in sys.argv[2:]]
print(json.dumps(docs))
"""


def test_the_whole_pipeline_runs_on_the_jax_backend_with_the_same_results(
    limits, analyzer, empty_models_dir, tmp_path, astronaut_png
):
    import os
    import subprocess
    import sys

    from tests.support.photos import darknet_photo

    pytest.importorskip("jax")
    astronaut = tmp_path / "astronaut.png"
    astronaut.write_bytes(astronaut_png)
    photos = [darknet_photo("dog.jpg"), astronaut]
    env = os.environ | {"KERAS_BACKEND": "jax", "PICMETRIC_DEVICE_NMS": "on"}
    run = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(empty_models_dir), *map(str, photos)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    on_jax = [Analysis.from_dict(d) for d in json.loads(run.stdout.strip().splitlines()[-1])]
    # On JAX the networks run in Keras float32; so does the reference here (auto may run OpenVINO bfloat16).
    networks = (analyzer.classifier, analyzer.detector, analyzer.faces)
    keras_float32 = Analyzer(*(network.run_on(KERAS_FLOAT32) for network in networks))
    for path, jax_analysis in zip(photos, on_jax, strict=True):
        tf_analysis = keras_float32.analyze(decode_image(path.read_bytes(), **limits))
        assert [c.label for c in jax_analysis.classifications] == [c.label for c in tf_analysis.classifications]
        for a, b in zip(shown(jax_analysis).detections, shown(tf_analysis).detections, strict=True):
            assert a.label == b.label and abs(a.score - b.score) < 1e-3 and a.box.iou(b.box) > 0.99
        assert len(shown(jax_analysis).faces) == len(shown(tf_analysis).faces)
        for a, b in zip(shown(jax_analysis).faces, shown(tf_analysis).faces, strict=True):
            assert abs(a.box.x1 - b.box.x1) < 2 and abs(a.landmarks["nose"].y - b.landmarks["nose"].y) < 2


@pytest.mark.parametrize("parallel", [True, False])
def test_each_network_is_reported_done_from_the_calling_thread(limits, analyzer, parallel, astronaut_png):
    import threading

    from picmetric_core.pipeline import Analyzer

    caller = threading.get_ident()
    one_way = Analyzer(analyzer.classifier, analyzer.detector, analyzer.faces, parallel=parallel)
    steps: list[tuple[str, int]] = []
    one_way.analyze(decode_image(astronaut_png, **limits), on_stage=lambda s: steps.append((s, threading.get_ident())))
    assert {thread for _, thread in steps} == {caller}  # Streamlit can only write from its own thread
    names = [name for name, _ in steps]
    for network in ("classifier", "detector", "faces"):
        assert names.index(network) < names.index(f"{network} done")
    assert len(names) == 6
