"""YOLOv3 / YOLOv3-tiny object detector on Keras 3, from darknet cfg + weights.

The network and its decoding run in one compiled function. Letterboxing happens in numpy before it;
thresholding, mapping boxes back to the image and class-wise non-maximum suppression happen either
in numpy after it or, with ``device_nms``, on the device (:mod:`picmetric_core.models.device_nms`).
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from picmetric_core.errors import WeightsError
from picmetric_core.models import weights
from picmetric_core.models.coco import official_name
from picmetric_core.models.engines import Engine, KeptModel, kept_model, kept_predictor, predictor
from picmetric_core.nms import class_wise_nms
from picmetric_core.results import Box, Detection, ModelInfo

if TYPE_CHECKING:
    import keras

    from picmetric_core.models.darknet import DarknetNet, YoloHead

# Keras, the darknet builder and the device-side selection are imported where they are used: a detector read
# back from its converted model (:meth:`YoloDetector.kept`) runs without Keras or TensorFlow.

log = logging.getLogger(__name__)

LETTERBOX_GRAY = 0.5  # darknet's letterbox fill
# Guards NMS against pathological images (or untrained weights) where thousands of
# (box, class) pairs pass a low threshold; real photos stay far below it.
MAX_CANDIDATES = 4000
# With NMS on the device, the best (box, class) pairs it considers per image. An image with more
# passing pairs is selected again, still on the device, among the best MAX_CANDIDATES as the host
# does, a few images at a time (the overlap matrices are 64 MB an image at that size).
DEVICE_NMS_CAPACITY = 1024
OVERFULL_IMAGES_PER_CALL = 4


@dataclass(frozen=True)
class Letterbox:
    """Where an image landed inside the square network input: scaled per axis, then offset."""

    scale_x: float  # resized width / original width
    scale_y: float  # resized height / original height
    dx: int
    dy: int
    width: int  # original image size
    height: int


def read_labels(path: Path = weights.COCO_NAMES) -> tuple[str, ...]:
    """Class names, one a line, in class-id order, with darknet's spellings turned into official COCO names."""
    return tuple(official_name(line.strip()) for line in path.read_text().splitlines() if line.strip())


def letterbox_size(width: int, height: int, size: int) -> tuple[int, int]:
    """The resized image's width and height inside a ``size`` square, by integer division as darknet's
    ``letterbox_image`` sizes it (rounding to nearest would give a 1-px different input on many photos).

    >>> letterbox_size(768, 576, 416), letterbox_size(500, 375, 416), letterbox_size(375, 500, 416)
    ((416, 312), (416, 312), (312, 416))
    >>> letterbox_size(640, 427, 416)
    (416, 277)
    """
    if width > height:  # darknet: (float)w / im.w < (float)h / im.h
        return size, max(1, height * size // width)
    return max(1, width * size // height), size


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and centre on a gray square, as darknet does.

    Args:
        rgb: HxWx3 uint8 image.
        size: side of the network input.

    Returns:
        The (size, size, 3) float32 input in [0, 1] and the :class:`Letterbox` that undoes it.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    new_w, new_h = letterbox_size(width, height, size)
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dx, dy = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.empty((size, size, 3), dtype=np.float32)
    inside = canvas[dy : dy + new_h]
    for border in (canvas[:dy], canvas[dy + new_h :], inside[:, :dx], inside[:, dx + new_w :]):
        border.fill(LETTERBOX_GRAY)
    # Divided straight into the canvas: the same float32 values as ``resized.astype(np.float32) / 255``.
    np.divide(resized, np.float32(255.0), out=inside[:, dx : dx + new_w], casting="unsafe")
    return canvas, Letterbox(new_w / width, new_h / height, dx, dy, width, height)


def decode_head(raw: keras.KerasTensor, head: YoloHead, input_size: int) -> keras.KerasTensor:
    """Decode one ``[yolo]`` head to rows of ``[cx, cy, w, h, objectness, obj * p(class)...]``.

    Coordinates are fractions of the network input, as darknet's and OpenCV's yolo layers give
    them; rows run over (grid y, grid x, anchor).
    """
    import keras

    _, rows, cols, _ = raw.shape
    anchors = len(head.anchors)
    # Decoded in float32 whatever the network computed in: bfloat16 box sizes would be off by pixels.
    x = keras.ops.reshape(keras.ops.cast(raw, "float32"), (-1, rows, cols, anchors, 5 + head.classes))
    grid_x, grid_y = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
    grid = np.stack([grid_x, grid_y], axis=-1)[:, :, None, :]
    xy = (keras.ops.sigmoid(x[..., 0:2]) + grid) / np.array([cols, rows], dtype=np.float32)
    wh = keras.ops.exp(x[..., 2:4]) * (np.array(head.anchors, dtype=np.float32) / input_size)
    objectness = keras.ops.sigmoid(x[..., 4:5])
    scores = objectness * keras.ops.sigmoid(x[..., 5:])
    decoded = keras.ops.concatenate([xy, wh, objectness, scores], axis=-1)
    return keras.ops.reshape(decoded, (-1, rows * cols * anchors, 5 + head.classes))


def decoding_model(net: DarknetNet) -> keras.Model:
    """``net`` plus on-graph decoding: (N, S, S, 3) in [0, 1] to (N, boxes, 5 + classes)."""
    import keras

    decoded = [decode_head(raw, head, net.input_size) for raw, head in zip(net.model.outputs, net.heads, strict=True)]
    merged = decoded[0] if len(decoded) == 1 else keras.ops.concatenate(decoded, axis=1)
    return keras.Model(net.model.input, merged, name=f"{net.model.name}_decoded")


def _to_image_corners(rows: np.ndarray, size: int, box: Letterbox) -> np.ndarray:
    """(n, 4) [cx, cy, w, h] input fractions to (n, 4) [x1, y1, x2, y2] clipped image pixels."""
    cx = (rows[:, 0] * size - box.dx) / box.scale_x
    cy = (rows[:, 1] * size - box.dy) / box.scale_y
    half_w, half_h = rows[:, 2] * size / box.scale_x / 2, rows[:, 3] * size / box.scale_y / 2
    corners = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return np.clip(corners, 0, [box.width, box.height, box.width, box.height])


def postprocess(
    decoded: np.ndarray,
    box: Letterbox,
    size: int,
    labels: tuple[str, ...],
    score_threshold: float,
    iou_threshold: float,
) -> list[Detection]:
    """One image's decoded rows to detections: threshold, class-wise NMS, image pixels.

    A box may pass for several classes (a car that is also a truck); each class keeps its own.
    """
    scores = decoded[:, 5:]
    box_idx, class_idx = np.nonzero(scores >= score_threshold)
    if box_idx.size == 0:
        return []
    candidate_scores = scores[box_idx, class_idx]
    if candidate_scores.size > MAX_CANDIDATES:
        top = np.argsort(-candidate_scores, kind="stable")[:MAX_CANDIDATES]  # ties: as top_k on the device
        box_idx, class_idx, candidate_scores = box_idx[top], class_idx[top], candidate_scores[top]
    corners = _to_image_corners(decoded[box_idx, :4], size, box)
    # Boxes wholly outside the image clip to nothing and are never kept.
    return [
        Detection(labels[class_idx[i]], int(class_idx[i]), float(candidate_scores[i]), Box(*map(float, corners[i])))
        for i in class_wise_nms(corners, candidate_scores, class_idx, iou_threshold)
    ]


def frames(boxes: Sequence[Letterbox]) -> np.ndarray:
    """``(N, 6)`` float32 rows of :data:`FRAME_COLUMNS`: what ``device_nms`` needs to map boxes."""
    from picmetric_core.models.device_nms import FRAME_COLUMNS

    return np.array([[getattr(b, column) for column in FRAME_COLUMNS] for b in boxes], np.float32)


def selected_detections(rows: np.ndarray, kept: np.ndarray, labels: tuple[str, ...]) -> list[Detection]:
    """One image's device-side selection as :func:`postprocess` would list it: best first, equal
    scores in class order."""
    chosen = rows[kept]
    chosen = chosen[np.argsort(chosen[:, 5], kind="stable")]
    detections = [
        Detection(labels[int(c)], int(c), float(score), Box(float(x1), float(y1), float(x2), float(y2)))
        for x1, y1, x2, y2, score, c in chosen
    ]
    return sorted(detections, key=lambda d: -d.score)


class YoloDetector:
    """A :class:`~picmetric_core.models.base.Detector` over a darknet YOLOv3-family network.

    Build it once per process (see :func:`load_darknet_detector`); ``detect`` may be called
    from several threads. ``device_nms`` (default: only on an accelerator, see
    :func:`~picmetric_core.models.compiled.use_device_nms`) thresholds and suppresses on the device,
    after the network, so only detections leave it.

    Example:
        >>> detector = load_detector(Path("models"))
        >>> [d.label for d in detector.detect(rgb, score_threshold=0.25, iou_threshold=0.45)]
        ['dog', 'bicycle', 'car', 'truck']
    """

    def __init__(
        self, net: DarknetNet, info: ModelInfo, labels: tuple[str, ...], device_nms: bool | None = None
    ) -> None:
        from picmetric_core.models import compiled
        from picmetric_core.models.device_nms import select_detections

        classes = {head.classes for head in net.heads}
        if classes != {len(labels)}:
            raise WeightsError(f"{info.name}: heads predict {classes} classes, {len(labels)} labels given")
        self.info = info
        self.labels = labels
        self.net = net
        self.input_size = net.input_size
        self.model = decoding_model(net)
        self._infer = self._keras_infer = compiled.compiled_forward(self.model, net.input_size)
        if device_nms is None:
            device_nms = compiled.use_device_nms()
        self._select = None
        if device_nms:
            self._forward_on_device = compiled.device_forward(self.model)
            self._select = compiled.device_function(
                functools.partial(select_detections, size=net.input_size), static=("capacity",)
            )
        self._lock = threading.Lock()
        self._kept: KeptModel | None = None

    @classmethod
    def kept(cls, kept: KeptModel, info: ModelInfo, artefacts: Path) -> YoloDetector:
        """The detector an earlier start converted (:attr:`kept_model`), run by OpenVINO without Keras, its
        detections selected on the host. It runs only as kept (no :meth:`run_on`)."""
        detector = cls.__new__(cls)
        detector.info, detector.labels, detector.input_size = info, read_labels(), info.input_size
        detector.net = detector.model = detector._keras_infer = detector._select = None
        detector._lock = threading.Lock()
        predict = kept_predictor(kept, artefacts)
        detector._infer, detector._kept = (lambda batch: predict(batch)[0]), kept
        return detector

    @property
    def kept_model(self) -> KeptModel | None:
        """The converted model this detector runs, where it is kept on disk (None on Keras)."""
        return self._kept

    def run_on(self, engine: Engine, artefacts: Path | None = None) -> YoloDetector:
        """This detector run by ``engine`` (a Keras engine: the compiled forward it was built with)."""
        if self.model is None:
            raise ValueError("a detector read back from its converted model runs only as it was kept")
        clone = copy.copy(self)
        clone._infer, clone._kept = self._keras_infer, None
        if engine.runtime != "keras":
            if self.device_nms:
                raise ValueError(f"{engine.name} runs on the CPU: it cannot select detections on a device")
            predict = predictor(self.model, engine, artefacts, self.info.weights)
            clone._infer, clone._kept = (lambda batch: predict(batch)[0]), kept_model(predict)
        clone._lock = threading.Lock()
        clone.info = replace(self.info, runtime=engine.describe())
        return clone

    @property
    def device_nms(self) -> bool:
        return self._select is not None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Decoded rows for an (N, S, S, 3) float32 batch: (N, boxes, 5 + classes)."""
        with self._lock:
            return self._infer(batch)

    def detect(self, rgb: np.ndarray, score_threshold: float = 0.1, iou_threshold: float = 0.9) -> list[Detection]:
        """COCO objects in an HxWx3 uint8 RGB image, best first.

        Args:
            rgb: the image.
            score_threshold: keep (box, class) pairs with objectness x class probability at least this.
            iou_threshold: within one class, drop a box overlapping a better one by more than this.

        Returns:
            Detections with boxes in the image's pixel coordinates, clipped to it.
        """
        return self.detect_batch([rgb], score_threshold, iou_threshold)[0]

    def detect_batch(
        self, images: list[np.ndarray], score_threshold: float = 0.1, iou_threshold: float = 0.9
    ) -> list[list[Detection]]:
        """:meth:`detect` for several images in one network call; one list per image, in order."""
        if not images:
            return []
        boxed = [letterbox(rgb, self.input_size) for rgb in images]
        batch = np.stack([inputs for inputs, _ in boxed])
        letterboxes = [box for _, box in boxed]
        if self._select is not None:
            with self._lock:
                return self._select_on_device(batch, letterboxes, score_threshold, iou_threshold)
        decoded = self.infer(batch)
        return [
            postprocess(image_rows, box, self.input_size, self.labels, score_threshold, iou_threshold)
            for image_rows, box in zip(decoded, letterboxes, strict=True)
        ]

    def _select_on_device(
        self, batch: np.ndarray, letterboxes: list[Letterbox], score_threshold: float, iou_threshold: float
    ) -> list[list[Detection]]:
        decoded = self._forward_on_device(batch)
        image_frames = frames(letterboxes)
        thresholds = np.asarray(score_threshold, np.float32), np.asarray(iou_threshold, np.float32)
        rows, kept, passing = self._selection(decoded, image_frames, thresholds, DEVICE_NMS_CAPACITY)
        per_image = list(zip(rows, kept, strict=True))
        overfull = np.flatnonzero(passing > DEVICE_NMS_CAPACITY)
        for start in range(0, len(overfull), OVERFULL_IMAGES_PER_CALL):
            chosen = overfull[start : start + OVERFULL_IMAGES_PER_CALL]
            import keras

            subset = keras.ops.take(decoded, keras.ops.convert_to_tensor(chosen), axis=0)
            more_rows, more_kept, _ = self._selection(subset, image_frames[chosen], thresholds, MAX_CANDIDATES)
            for index, image_rows, image_kept in zip(chosen, more_rows, more_kept, strict=True):
                per_image[index] = (image_rows, image_kept)
        return [selected_detections(image_rows, image_kept, self.labels) for image_rows, image_kept in per_image]

    def _selection(
        self, decoded, image_frames: np.ndarray, thresholds: tuple[np.ndarray, np.ndarray], capacity: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import keras

        outputs = self._select(decoded, image_frames, *thresholds, capacity=capacity)
        return tuple(keras.ops.convert_to_numpy(o) for o in outputs)


_CACHE: dict[tuple[Path, Path, int, str, bool], YoloDetector] = {}
_CACHE_LOCK = threading.Lock()


def load_darknet_detector(
    cfg_path: Path,
    weights_path: Path,
    name: str,
    full: bool,
    input_size: int = 416,
    note: str = "",
    device_nms: bool | None = None,
) -> YoloDetector:
    """The detector for one cfg + weights pair, built once per process and then shared.

    Args:
        cfg_path: darknet cfg the weights were trained with.
        weights_path: darknet ``.weights`` file.
        name: shown in :class:`ModelInfo`, e.g. ``"YOLOv3"``.
        full: True for the intended full model, False for the offline stand-in.
        input_size: network input side (multiple of 32); the cfg's own size is ignored.
        note: shown in :class:`ModelInfo`.
        device_nms: select detections on the device (default: only on an accelerator).

    Raises:
        WeightsError: the weights do not fit the cfg.
    """
    import keras

    from picmetric_core.models import compiled
    from picmetric_core.models.darknet import load_darknet

    if device_nms is None:
        device_nms = compiled.use_device_nms()
    key = (cfg_path.resolve(), weights_path.resolve(), input_size, keras.config.dtype_policy().name, device_nms)
    with _CACHE_LOCK:
        if key not in _CACHE:
            net = load_darknet(cfg_path, weights_path, input_size)
            info = ModelInfo("detector", name, weights.weights_label(weights_path), full, input_size, note)
            _CACHE[key] = YoloDetector(net, info, read_labels(), device_nms=device_nms)
        return _CACHE[key]


def load_detector(models_dir: Path, device_nms: bool | None = None) -> YoloDetector:
    """Full YOLOv3-416 when its weights are in ``models_dir``, else the shipped YOLOv3-tiny.

    ``device_nms``: select detections on the device (default: only on an accelerator).

    Raises:
        WeightsError: neither weights file is available.
    """
    full = weights.locate(weights.YOLOV3, models_dir)
    if full is not None:
        return load_darknet_detector(weights.YOLOV3_CFG, full, "YOLOv3", full=True, device_nms=device_nms)
    tiny = weights.locate(weights.YOLOV3_TINY, models_dir)
    if tiny is None:
        raise WeightsError(
            f"no detector weights: {weights.YOLOV3.filename} is not in {models_dir} and the "
            f"{weights.YOLOV3_TINY.package} package (YOLOv3-tiny) is not installed"
        )
    log.info("%s not found in %s; running YOLOv3-tiny", weights.YOLOV3.filename, models_dir)
    note = f"stand-in: {weights.YOLOV3.filename} not found in the models folder"
    return load_darknet_detector(
        weights.YOLOV3_TINY_CFG, tiny, "YOLOv3-tiny", full=False, note=note, device_nms=device_nms
    )
