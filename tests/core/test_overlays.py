"""Overlay labels: readable at the shown size, never hiding one another, legible on their colour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from picmetric_core.overlays import (
    DISPLAY_WIDTH,
    _label_size,
    _Style,
    annotate_detections,
    class_color,
    place_labels,
    text_color,
)
from picmetric_core.results import Box, Detection


def _no_two_overlap(rects) -> None:
    for a, b in itertools.combinations(rects, 2):
        assert a.overlap(b) == 0, (a, b)


def test_many_dense_boxes_get_labels_that_never_overlap():
    rng = np.random.default_rng(3)
    width, height = 640, 480
    style = _Style.for_image(np.zeros((height, width, 3), np.uint8))
    boxes, sizes = [], []
    for n in range(20):  # a crowd: 20 boxes packed into the middle of the image (their labels fill half of it)
        x1, y1 = rng.uniform(200, 400), rng.uniform(150, 300)
        boxes.append(Box(x1, y1, x1 + rng.uniform(20, 80), y1 + rng.uniform(30, 120)))
        name = ["person", "car", "truck", "traffic light"][n % 4]
        sizes.append(_label_size(f"{name} {rng.integers(25, 99)}%", style))
    rects = place_labels(sizes, boxes, (width, height))
    _no_two_overlap(rects)
    for rect in rects:
        assert rect.x1 >= 0 and rect.y1 >= 0 and rect.x2 <= width and rect.y2 <= height


def test_two_labels_on_nearly_the_same_box_are_both_readable():
    style = _Style.for_image(np.zeros((480, 640, 3), np.uint8))
    boxes = [Box(100, 100, 300, 250), Box(102, 98, 298, 252)]
    rects = place_labels([_label_size("car 64%", style), _label_size("truck 54%", style)], boxes, (640, 480))
    _no_two_overlap(rects)
    for rect, box in zip(rects, boxes, strict=True):  # each stays next to its box
        assert abs(rect.x1 - box.x1) < 150 and abs(rect.y1 - box.y1) < 200


@pytest.mark.parametrize("width", [640, 1280, 4000])
def test_labels_are_at_least_12_px_tall_when_shown_at_the_display_width(width):
    style = _Style.for_image(np.zeros((width * 3 // 4, width, 3), np.uint8))
    _, label_height = _label_size("dog 88%", style)
    assert label_height * DISPLAY_WIDTH / width >= 12


def test_label_text_is_black_on_light_colours_and_white_on_dark_ones():
    assert text_color((255, 230, 0)) == (0, 0, 0)  # yellow
    assert text_color((0, 255, 0)) == (0, 0, 0)
    assert text_color((30, 60, 200)) == (255, 255, 255)  # blue
    assert text_color((120, 0, 160)) == (255, 255, 255)


def test_label_background_and_text_are_drawn_with_the_chosen_contrast():
    rgb = np.full((480, 640, 3), 128, np.uint8)
    detection = Detection("person", 0, 0.9, Box(200, 200, 400, 400))
    canvas = annotate_detections(rgb, [detection])
    color, ink = class_color(0), text_color(class_color(0))
    label_area = canvas[150:200, 200:400].reshape(-1, 3)
    assert (label_area == color).all(axis=1).sum() > 500  # the filled label sits above the box
    assert (np.abs(label_area.astype(int) - ink).sum(axis=1) < 60).sum() > 50  # with its text in the contrasting ink
