"""One NMS for the detector and the display filters: OpenCV's batched NMS keeps the greedy reference's boxes."""

from __future__ import annotations

import numpy as np
import pytest

from picmetric_core.nms import class_wise_nms, greedy_nms


def reference(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS one class after another, then every kept box by score (stable): the order before OpenCV."""
    kept: list[int] = []
    for class_id in np.unique(class_ids):
        members = np.flatnonzero(class_ids == class_id)
        kept.extend(int(members[i]) for i in greedy_nms(boxes[members], scores[members], iou))
    return sorted(kept, key=lambda i: -scores[i])


def random_boxes(rng: np.random.Generator, count: int, classes: int, score_levels: int):
    corner = rng.uniform(0, 400, (count, 2))
    size = rng.uniform(5, 120, (count, 2))
    boxes = np.concatenate([corner, corner + size], axis=1).astype(np.float32).astype(np.float64)
    # Few distinct scores, so many ties; float32 values, as the networks give them.
    scores = (rng.integers(1, score_levels + 1, count) / score_levels).astype(np.float32).astype(np.float64)
    return boxes, scores, rng.integers(0, classes, count)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("iou", [0.3, 0.45, 0.7, 0.9])
def test_opencv_keeps_the_greedy_references_boxes_in_its_order(seed, iou):
    boxes, scores, class_ids = random_boxes(np.random.default_rng(seed), 300, 5, 7)
    assert class_wise_nms(boxes, scores, class_ids, iou).tolist() == reference(boxes, scores, class_ids, iou)


def test_ties_keep_class_then_input_order():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 110, 110], [0, 0, 10, 10], [1, 0, 11, 10]], float)
    scores = np.array([0.5, 0.5, 0.5, 0.5, 0.9])
    class_ids = np.array([2, 1, 2, 1, 2])
    # Class 2: box 4 (0.9) suppresses box 0 (IoU 0.82); box 2 stays. Class 1: box 1 beats its twin 3 by order.
    assert class_wise_nms(boxes, scores, class_ids, 0.5).tolist() == [4, 1, 2]


def test_boxes_without_area_are_never_kept_and_empty_input_is_fine():
    boxes = np.array([[5, 5, 5, 9], [5, 5, 5, 9], [0, 0, 4, 4]], float)
    assert class_wise_nms(boxes, np.array([0.9, 0.8, 0.7]), np.zeros(3, int), 0.5).tolist() == [2]
    assert class_wise_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).tolist() == []


@pytest.mark.slow
def test_the_detectors_raw_boxes_are_selected_as_before(analyzer, dog_jpg, person_jpg):
    """Every raw (box, class) pair YOLO-tiny scores on two photos, at the raw and the display cut-offs."""
    import cv2

    from picmetric_core.models.yolo import _to_image_corners, letterbox

    detector = analyzer.detector
    for data in (dog_jpg, person_jpg):
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        inputs, box = letterbox(rgb, detector.input_size)
        rows = detector.infer(inputs[None])[0]
        for score_threshold, iou in ((0.1, 0.9), (0.01, 0.45), (0.25, 0.45)):
            box_idx, class_idx = np.nonzero(rows[:, 5:] >= score_threshold)
            corners = _to_image_corners(rows[box_idx, :4], detector.input_size, box).astype(np.float64)
            scores = rows[box_idx, 5:][np.arange(box_idx.size), class_idx].astype(np.float64)
            assert box_idx.size >= 5
            with_area = (corners[:, 2:] > corners[:, :2]).all(axis=1)
            expected = [i for i in reference(corners, scores, class_idx, iou) if with_area[i]]
            assert class_wise_nms(corners, scores, class_idx, iou).tolist() == expected
