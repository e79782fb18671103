"""The Keras 3 MTCNN against the ``mtcnn`` package it was ported from, network by network and photo by photo."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from picmetric_core.models import mtcnn_keras as mk
from picmetric_core.models import pyramid_mosaic as mosaic
from picmetric_core.models.mtcnn_runtime import face_probability
from picmetric_core.results import LANDMARK_NAMES, Box, Face, Point
from tests.support.photos import darknet_photo

pytestmark = pytest.mark.slow

FACE_SCORE = 0.9  # the app's default face threshold (filters.DisplayThresholds)
PIXELS = 2.0
CONFIDENCE = 0.01
REPO = Path(__file__).resolve().parents[2]


def _tiled(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([np.concatenate([rgb, rgb], axis=1)] * 2, axis=0)


def _photo(name: str) -> np.ndarray:
    if name == "astronaut":
        return skimage.data.astronaut()
    if name == "astronaut_2x2":
        return _tiled(skimage.data.astronaut())
    if name == "chelsea":
        return skimage.data.chelsea()
    return np.asarray(Image.open(darknet_photo(name)).convert("RGB"))


@pytest.fixture(scope="module")
def keras_mtcnn() -> mk.KerasMtcnn:
    return mk.KerasMtcnn()


@pytest.fixture(scope="module")
def reference():
    from picmetric_core.models.faces import MtcnnFaceDetector

    return MtcnnFaceDetector()


def assert_same_faces(ours: list[Face], theirs: list[Face]) -> None:
    """Same count; matched best-first, boxes and landmarks within 2 px, scores within 0.01."""
    assert len(ours) == len(theirs), (ours, theirs)
    for face in theirs:
        twin = max(ours, key=lambda f: f.box.iou(face.box))
        assert np.abs(np.subtract(twin.box.as_list(), face.box.as_list())).max() <= PIXELS, (twin, face)
        assert abs(twin.score - face.score) <= CONFIDENCE, (twin, face)
        for name in LANDMARK_NAMES:
            a, b = twin.landmarks[name], face.landmarks[name]
            assert max(abs(a.x - b.x), abs(a.y - b.y)) <= PIXELS, (name, twin, face)


@pytest.mark.parametrize(
    ("photo", "expected"),
    [("astronaut", 1), ("astronaut_2x2", 4), ("person.jpg", None), ("chelsea", None)],
)
def test_agrees_with_the_mtcnn_package(keras_mtcnn, reference, photo: str, expected: int | None) -> None:
    rgb = _photo(photo)
    ours = keras_mtcnn.detect_faces(rgb, min_confidence=FACE_SCORE)
    theirs = reference.detect_faces(rgb, min_confidence=FACE_SCORE)
    assert_same_faces(ours, theirs)
    if expected is not None:
        assert len(ours) == expected


def test_agrees_at_the_raw_threshold_too(keras_mtcnn, reference) -> None:
    rgb = _tiled(skimage.data.astronaut())
    assert_same_faces(keras_mtcnn.detect_faces(rgb), reference.detect_faces(rgb))


def test_astronaut_face_where_the_notes_put_it(keras_mtcnn) -> None:
    (face,) = keras_mtcnn.detect_faces(skimage.data.astronaut(), min_confidence=FACE_SCORE)
    assert face.score == pytest.approx(0.9991, abs=1e-3)
    assert face.box.as_list() == pytest.approx([182, 64, 265, 171], abs=PIXELS)
    assert (face.landmarks["nose"].x, face.landmarks["nose"].y) == pytest.approx((224, 126), abs=PIXELS)
    assert face.landmarks["left_eye"].x < face.landmarks["right_eye"].x


def test_info_and_results_are_plain_python(keras_mtcnn) -> None:
    assert keras_mtcnn.info.role == "faces"
    assert keras_mtcnn.info.name == "MTCNN (Keras 3)"
    (face,) = keras_mtcnn.detect_faces(skimage.data.astronaut(), min_confidence=FACE_SCORE)
    assert type(face.score) is float and type(face.box.x1) is float
    assert type(face.landmarks["nose"].x) is float


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
    ],
)
def test_only_rgb_uint8(keras_mtcnn, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        keras_mtcnn.detect_faces(bad)


def test_tiny_and_blank_images_have_no_faces(keras_mtcnn) -> None:
    assert keras_mtcnn.detect_faces(np.zeros((8, 300, 3), np.uint8)) == []
    assert keras_mtcnn.detect_faces(np.full((200, 300, 3), 128, np.uint8)) == []


def test_layers_consume_every_array_of_the_package_pickles() -> None:
    folder = mk.weights_dir()
    model = mk.build_rnet()
    with pytest.raises(ValueError, match="left over"):
        mk.load_package_weights(model, folder / "rnet.lz4", mk.RNET_LAYERS[:-1])


def _package_network(name: str):
    from mtcnn.network.onet import ONet
    from mtcnn.network.pnet import PNet
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    model = {"pnet": PNet, "rnet": RNet, "onet": ONet}[name]()
    model.build()
    model.set_weights(load_weights(f"{name}.lz4"))
    return model


def _as_package_outputs(heads: np.ndarray) -> list[np.ndarray]:
    """A runtime network's one output (regressions, then the face logit) as the package's outputs."""
    face = face_probability(heads[..., -1])
    splits = {5: [4], 15: [4, 14]}[heads.shape[-1]]
    return [*np.split(heads[..., :-1], splits[:-1], axis=-1), np.stack([1 - face, face], axis=-1)]


@pytest.mark.parametrize(("name", "size"), [("rnet", 24), ("onet", 48)])
def test_patch_networks_match_the_package(keras_mtcnn, name: str, size: int) -> None:
    """The runtime networks take the pixels as they are and answer with one array: the same numbers."""
    pixels = np.random.default_rng(0).uniform(0, 255, (7, size, size, 3)).astype(np.float32)
    theirs = [np.asarray(o) for o in _package_network(name)(mk.normalize(pixels))]
    (heads,) = mk._predict(getattr(keras_mtcnn, f"_{name}"), pixels)
    for a, b in zip(_as_package_outputs(heads), theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_pnet_on_a_mosaic_gives_each_level_the_package_map_of_that_level_alone(keras_mtcnn) -> None:
    astronaut = skimage.data.astronaut().astype(np.float32)
    levels = [astronaut[:h, :w] for h, w in [(90, 121), (64, 64), (37, 53), (41, 90), (13, 12)]]
    layout = mosaic.pack([level.shape[:2] for level in levels])
    image, mask = mosaic.canvas(levels, layout)
    (heads,) = mk._predict(keras_mtcnn._pnet, (image[None], mask[None]))
    for level, place in zip(levels, layout.placements, strict=True):
        package = _package_network("pnet")(mk.normalize(level)[None])
        theirs_offsets, theirs_scores = (np.asarray(o)[0] for o in package)
        ours_offsets, ours_scores = _as_package_outputs(mosaic.level_map(heads[0], place))
        cells = (mosaic.output_size(place.height), mosaic.output_size(place.width))
        assert ours_scores.shape[:2] == theirs_scores.shape[:2] == cells
        np.testing.assert_allclose(ours_offsets, theirs_offsets, atol=1e-4)
        np.testing.assert_allclose(ours_scores, theirs_scores, atol=1e-4)


@pytest.mark.parametrize("size", [(480, 640), (640, 480), (300, 3000), (24, 30), (1080, 1920)])
def test_mosaic_places_every_level_inside_the_canvas_at_even_offsets_without_overlap(size) -> None:
    height, width = size
    shapes = [(int(height * s), int(width * s)) for s in mk.scale_pyramid(height, width)]
    shapes = [shape for shape in shapes if min(shape) >= mk.PNET_WINDOW]
    for levels in (shapes, shapes[mk.ALONE_LEVELS :]):
        if not levels:
            continue
        layout = mosaic.pack(levels)
        taken = np.zeros((layout.height, layout.width), bool)
        for (h, w), place in zip(levels, layout.placements, strict=True):
            assert place.y % 2 == 0 and place.x % 2 == 0 and (place.height, place.width) == (h, w)
            assert place.y + h <= layout.height and place.x + w <= layout.width
            assert not taken[place.y : place.y + h, place.x : place.x + w].any()
            taken[place.y : place.y + h, place.x : place.x + w] = True
        assert layout.height % mosaic.SHAPE_BUCKET == 0 and layout.width % mosaic.SHAPE_BUCKET == 0
    # The levels that share a canvas in use: not many more pixels than padding each on its own
    # (panoramas pack worst: 1.33x).
    small = shapes[mk.ALONE_LEVELS :]
    if small:
        assert mosaic.pack(small).pixels <= 1.4 * sum(mosaic.pack([shape]).pixels for shape in small)


def test_crop_and_resize_matches_tensorflow() -> None:
    import tensorflow as tf

    image = mk.normalize(skimage.data.chelsea())
    boxes = np.array([[10.0, 20.0, 60.5, 70.5, 1], [-15.0, -8.0, 40.0, 47.0, 1], [400.0, 250.0, 480.0, 330.0, 1]])
    height, width = image.shape[:2]
    normalised = boxes[:, [1, 0, 3, 2]] / np.array([height, width, height, width])
    expected = tf.image.crop_and_resize(image[None], normalised, np.zeros(3, np.int32), (24, 24)).numpy()
    np.testing.assert_allclose(mk.crop_and_resize(image, boxes, 24), expected, atol=1e-5)


def test_nms_is_the_packages_one_pass_nms() -> None:
    from mtcnn.utils.bboxes import smart_nms_from_bboxes

    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 100, (300, 2))
    sizes = rng.uniform(5, 40, (300, 2))
    boxes = mk.sort_by_score(np.column_stack([corners, corners + sizes, rng.uniform(0, 1, 300)]))
    with_ids = np.column_stack([np.zeros(len(boxes)), boxes])
    for method, threshold in [("union", 0.5), ("union", 0.7), ("min", 0.7)]:
        theirs = smart_nms_from_bboxes(with_ids, threshold, method=method, initial_sort=False)[:, 1:]
        np.testing.assert_array_equal(mk.package_nms(boxes, threshold, method, chunk=64), theirs)


def test_scale_pyramid_is_the_packages() -> None:
    from mtcnn.utils.images import build_scale_pyramid

    for height, width in [(512, 512), (480, 640), (30, 900), (1024, 768)]:
        expected = build_scale_pyramid(width, height, min_face_size=20, scale_factor=0.709)
        np.testing.assert_allclose(mk.scale_pyramid(height, width), expected)


JAX_SCRIPT = """
import dataclasses, json, keras, skimage.data
from picmetric_core.models.mtcnn_keras import KerasMtcnn
faces = KerasMtcnn().detect_faces(skimage.data.astronaut(), min_confidence=0.9)
print(json.dumps({"backend": keras.backend.backend(), "faces": [dataclasses.asdict(f) for f in faces]}))
"""


def _face(data: dict) -> Face:
    landmarks = {name: Point(**point) for name, point in data["landmarks"].items()}
    return Face(data["score"], Box(**data["box"]), landmarks)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_finds_the_same_faces(keras_mtcnn) -> None:
    env = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    faces = [_face(data) for data in result["faces"]]
    assert len(faces) == 1
    assert_same_faces(faces, keras_mtcnn.detect_faces(skimage.data.astronaut(), min_confidence=FACE_SCORE))


@pytest.mark.parametrize("shape", [(480, 640, 3), (427, 640, 3), (301, 199, 1)])
def test_pyramid_levels_are_opencvs_area_averages(shape) -> None:
    """The levels read from one table of sums are the area averages the package's pyramid is made of."""
    import cv2

    from picmetric_core.models.area_pyramid import area_levels

    rgb = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    sizes = [(int(shape[0] * s), int(shape[1] * s)) for s in mk.scale_pyramid(*shape[:2])]
    for level, (height, width) in zip(area_levels(rgb, sizes), sizes, strict=True):
        expected = cv2.resize(rgb.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(level, expected.reshape(level.shape), atol=1e-3)


def test_a_photo_too_large_for_32_bit_sums_gets_the_same_levels_from_float64_sums(monkeypatch) -> None:
    import cv2

    from picmetric_core.models import area_pyramid

    assert area_pyramid.table_depth((2900, 2904, 3)) == cv2.CV_64F  # 2.1e9 > 2**31: 32-bit sums would wrap
    rgb = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    sizes = [(int(480 * s), int(640 * s)) for s in mk.scale_pyramid(480, 640)]
    from_integers = area_pyramid.area_levels(rgb, sizes)
    monkeypatch.setattr(area_pyramid, "table_depth", lambda shape: cv2.CV_64F)
    for integer_level, float_level in zip(from_integers, area_pyramid.area_levels(rgb, sizes), strict=True):
        np.testing.assert_allclose(float_level, integer_level, atol=1e-4)
