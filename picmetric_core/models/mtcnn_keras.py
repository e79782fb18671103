"""MTCNN in Keras 3 on the ``mtcnn`` package's own weights, so faces run on any Keras backend.

P-Net, R-Net and O-Net are rebuilt with ``keras.layers``; the pyramid, box regression, NMS and
landmark math follow ``mtcnn==1.0.0`` step by step in numpy, so on the same photo both give the same
faces. The ``mtcnn`` package itself imports TensorFlow: it is only read from disk here, never imported.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np

from picmetric_core.models import pyramid_mosaic as mosaic
from picmetric_core.models.area_pyramid import area_levels, compile_kernels
from picmetric_core.models.crops import crop_and_resize
from picmetric_core.models.engines import Engine, KeptModel, Predict, kept_model, kept_predictor, predictor
from picmetric_core.models.mtcnn_runtime import (
    BACKGROUND,
    PIXEL_OFFSET,
    PIXEL_SCALE,
    face_logit,
    face_probability,
    merged_heads,
    runtime_copy,
)
from picmetric_core.models.weights import weights_label
from picmetric_core.results import LANDMARK_NAMES, RAW_FACE_SCORE, Box, Face, ModelInfo, Point

if TYPE_CHECKING:
    import keras

# Keras is imported where the networks are built or run by it: a detector read back from its converted models
# (:meth:`KerasMtcnn.kept`) runs without Keras or TensorFlow.

# The package's defaults (mtcnn/stages/*.py), except the O-Net threshold: the raw results' face cut-off.
MIN_FACE_SIZE = 20
SCALE_FACTOR = 0.709
PNET_WINDOW = 12
PNET_STRIDE = 2
THRESHOLD_PNET = 0.6
THRESHOLD_RNET = 0.7
LOGIT_PNET = face_logit(THRESHOLD_PNET)
NMS_PNET_SCALE = 0.5
NMS_PNET_ALL = 0.7
NMS_RNET = 0.7
NMS_ONET = 0.7

# JAX compiles once per input shape: there batches are padded to powers of two (candidates to at
# least 16) and P-Net canvases to multiples of pyramid_mosaic.SHAPE_BUCKET to keep the shapes few.
# TensorFlow's traced predict generalises to any batch size after two, so there padding only costs
# (O-Net on 2 faces padded to 16: 5.4 instead of 2.6 ms).
MIN_BATCH_BUCKET = 16
# P-Net's cost is its arithmetic, about proportional to the pixels it sees: the largest levels run
# alone (padding each to the bucket wastes little), the smaller ones share a canvas, which saves one
# call a level (~0.5 ms each on the CPU) for about the same pixels.
ALONE_LEVELS = 2
# Canvas pixels per P-Net call (its first activations take 40 bytes a pixel), and at most this many canvases.
PNET_CALL_PIXELS = 8_000_000
MAX_PNET_BATCH = 16

NETWORKS = ("pnet", "rnet", "onet")

Stage = Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]]
"""One MTCNN stage over several images: each image's candidate boxes to its next boxes."""

# Layer names in the order the package's pickles list their arrays (its models' tracking order).
PNET_LAYERS = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4-1", "conv4-2")
RNET_LAYERS = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc4", "prelu4", "fc5-1", "fc5-2")
ONET_LAYERS = (
    "conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
    "fc5", "prelu5", "fc6-1", "fc6-2", "fc6-3",
)  # fmt: skip


def weights_dir() -> Path:
    """The folder of the ``mtcnn`` package's shipped ``{pnet,rnet,onet}.lz4``, found without importing it."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the mtcnn package (which ships the MTCNN weights) is not installed")
    return Path(spec.origin).parent / "assets" / "weights"


def _conv_block(x: keras.KerasTensor, filters: int, kernel: int, index: int) -> keras.KerasTensor:
    from keras import layers

    x = layers.Conv2D(filters, kernel, padding="valid", name=f"conv{index}")(x)
    return layers.PReLU(shared_axes=[1, 2], name=f"prelu{index}")(x)


def build_pnet(runtime: bool = False) -> keras.Model:
    """P-Net: fully convolutional; inputs an image and an additive mask on its first activations.

    The mask is 0 over the real image and ``pyramid_mosaic.PAD_ACTIVATION`` over padding, shape
    ``(B, H-2, W-2, 1)``.
    Outputs box offsets ``(B, h, w, 4)`` and face probabilities ``(B, h, w, 2)``; with ``runtime``
    (:mod:`.mtcnn_runtime`: pixels 0–255 in) one output ``(B, h, w, 5)``, the offsets and the face logit.
    """
    import keras
    from keras import layers

    image = keras.Input((None, None, 3), name="image")
    mask = keras.Input((None, None, 1), name="mask")
    x = keras.ops.add(_conv_block(image, 10, 3, 1), mask)
    x = layers.MaxPooling2D(2, 2, padding="same")(x)
    x = _conv_block(x, 16, 3, 2)
    x = _conv_block(x, 32, 3, 3)
    if runtime:
        return keras.Model([image, mask], merged_heads(x, 4, dense=False), name="pnet_pixels")
    offsets = layers.Conv2D(4, 1, name="conv4-1")(x)
    scores = layers.Conv2D(2, 1, activation="softmax", name="conv4-2")(x)
    return keras.Model([image, mask], [offsets, scores], name="pnet")


def _dense_head(x: keras.KerasTensor, units: int, index: int) -> keras.KerasTensor:
    from keras import layers

    # The package flattens width-major (Permute before Flatten): its dense kernels expect that order.
    x = layers.Flatten()(layers.Permute((2, 1, 3))(x))
    x = layers.Dense(units, name=f"fc{index}")(x)
    return layers.PReLU(name=f"prelu{index}")(x)


def build_rnet(runtime: bool = False) -> keras.Model:
    """R-Net on 24×24 patches: outputs box offsets ``(N, 4)`` and face probabilities ``(N, 2)``; with
    ``runtime``, one output ``(N, 5)``: the offsets and the face logit."""
    import keras
    from keras import layers

    patches = keras.Input((24, 24, 3), name="patches")
    x = layers.MaxPooling2D(3, 2, padding="same")(_conv_block(patches, 28, 3, 1))
    x = layers.MaxPooling2D(3, 2, padding="valid")(_conv_block(x, 48, 3, 2))
    x = _dense_head(_conv_block(x, 64, 2, 3), 128, 4)
    if runtime:
        return keras.Model(patches, merged_heads(x, 4, dense=True), name="rnet_pixels")
    offsets = layers.Dense(4, name="fc5-1")(x)
    scores = layers.Dense(2, activation="softmax", name="fc5-2")(x)
    return keras.Model(patches, [offsets, scores], name="rnet")


def build_onet(runtime: bool = False) -> keras.Model:
    """O-Net on 48×48 patches: box offsets ``(N, 4)``, landmarks ``(N, 10)`` (xs then ys), probabilities;
    with ``runtime``, one output ``(N, 15)``: offsets, landmarks and the face logit."""
    import keras
    from keras import layers

    patches = keras.Input((48, 48, 3), name="patches")
    x = layers.MaxPooling2D(3, 2, padding="same")(_conv_block(patches, 32, 3, 1))
    x = layers.MaxPooling2D(3, 2, padding="valid")(_conv_block(x, 64, 3, 2))
    x = layers.MaxPooling2D(2, 2, padding="same")(_conv_block(x, 64, 3, 3))
    x = _dense_head(_conv_block(x, 128, 2, 4), 256, 5)
    if runtime:
        return keras.Model(patches, merged_heads(x, 14, dense=True), name="onet_pixels")
    offsets = layers.Dense(4, name="fc6-1")(x)
    landmarks = layers.Dense(10, name="fc6-2")(x)
    scores = layers.Dense(2, activation="softmax", name="fc6-3")(x)
    return keras.Model(patches, [offsets, landmarks, scores], name="onet")


def load_package_weights(model: keras.Model, path: Path, layer_names: Sequence[str]) -> keras.Model:
    """Sets ``model``'s weights from one of the package's lz4 joblib pickles, every array consumed.

    Raises:
        ValueError: when the pickle holds more or fewer arrays, or other shapes, than the layers.
    """
    arrays = list(joblib.load(path))
    for name in layer_names:
        layer = model.get_layer(name)
        count = len(layer.weights)
        layer.set_weights(arrays[:count])  # raises ValueError on a shape mismatch
        arrays = arrays[count:]
    if arrays:
        raise ValueError(f"{path.name}: {len(arrays)} arrays left over after {model.name}'s layers")
    return model


def scale_pyramid(height: int, width: int) -> np.ndarray:
    """The package's pyramid scales (``build_scale_pyramid``), its count rounding included."""
    count = round(-(np.log(min(height, width) / PNET_WINDOW) / np.log(SCALE_FACTOR) + 1))
    return PNET_WINDOW / MIN_FACE_SIZE * SCALE_FACTOR ** np.arange(max(count, 0))


def _batch_bucket(count: int, smallest: int = MIN_BATCH_BUCKET) -> int:
    # JAX compiles again for each batch size, so Keras on JAX gets batches padded to a few sizes; where Keras
    # is not even loaded (networks read back from their converted models) nothing runs on it.
    keras = sys.modules.get("keras")
    if keras is None or keras.backend.backend() != "jax":
        return count
    return max(smallest, 1 << (count - 1).bit_length())


def pnet_boxes(offsets: np.ndarray, logits: np.ndarray, scale: float) -> np.ndarray:
    """P-Net's windows above ``THRESHOLD_PNET`` as rows ``x1, y1, x2, y2, score`` in image pixels.

    ``offsets`` ``(h, w, 4)`` and face ``logits`` ``(h, w)`` are one level's maps, cropped to the real image.
    """
    ys, xs = np.nonzero(logits > LOGIT_PNET)
    reg = offsets[ys, xs]
    size = PNET_WINDOW - 1  # the package's cell: corners at stride*i + 1 and stride*i + 12
    x1, y1 = xs * PNET_STRIDE + 1, ys * PNET_STRIDE + 1
    x2, y2 = xs * PNET_STRIDE + PNET_WINDOW, ys * PNET_STRIDE + PNET_WINDOW
    corners = np.stack([x1, y1, x2, y2], axis=1) + reg * size
    boxes = np.column_stack([corners / scale, face_probability(logits[ys, xs])])
    return sort_by_score(boxes)


def sort_by_score(boxes: np.ndarray) -> np.ndarray:
    """Rows by descending score (last column), ties as the package breaks them."""
    return boxes[np.argsort(boxes[:, 4])[::-1]]


def pairwise_overlap(first: np.ndarray, second: np.ndarray, method: str) -> np.ndarray:
    """IoU (``method="union"``) or intersection over the smaller area (``"min"``), ``len(first)×len(second)``."""
    area_a = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_b = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    a, b = first[:, None, :4], second[None, :, :4]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]))
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]))
    inter = iw * ih
    if method == "union":
        denominator = area_a[:, None] + area_b[None, :] - inter
    else:
        denominator = np.minimum(area_a[:, None], area_b[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / denominator


def package_nms(boxes: np.ndarray, threshold: float, method: str = "union", chunk: int = 1024) -> np.ndarray:
    """The package's one-pass NMS on score-sorted rows: a box goes if ANY better box overlaps it.

    Unlike greedy NMS (:mod:`picmetric_core.nms`) a suppressed box still suppresses: that is what
    ``mtcnn.utils.bboxes.nms`` does, and the results must match it. Column chunks bound the memory.
    """
    keep = np.ones(len(boxes), bool)
    for start in range(1, len(boxes), chunk):
        stop = min(start + chunk, len(boxes))
        overlap = pairwise_overlap(boxes[:stop, :4], boxes[start:stop, :4], method)
        earlier = np.arange(stop)[:, None] < np.arange(start, stop)[None, :]
        keep[start:stop] = ~((overlap > threshold) & earlier).any(axis=0)
    return boxes[keep]


def to_square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (the package's ``resize_to_square``)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + 0.5 * (w - side)
    out[:, 1] = boxes[:, 1] + 0.5 * (h - side)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def refine(boxes: np.ndarray, offsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Boxes moved by a network's offsets in units of their (+1) size, with its scores in place."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    corners = boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)
    return np.column_stack([corners, scores])


def place_landmarks(landmarks: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """O-Net's box-relative landmarks (xs then ys) in image pixels, as the package places them."""
    w = boxes[:, 2:3] - boxes[:, 0:1] + 1
    h = boxes[:, 3:4] - boxes[:, 1:2] + 1
    return np.concatenate([w * landmarks[:, :5] + boxes[:, 0:1] - 1, h * landmarks[:, 5:] + boxes[:, 1:2] - 1], axis=1)


def normalize(rgb: np.ndarray) -> np.ndarray:
    """Pixels to the package networks' range, ``(v - 127.5) / 128``, as float32 (the runtime networks fold it in)."""
    return (rgb.astype(np.float32) - PIXEL_OFFSET) / PIXEL_SCALE


@dataclass(frozen=True)
class CanvasJob:
    """One P-Net canvas: which image, which of its pyramid levels, and where they sit."""

    image: int
    levels: list[int]
    layout: mosaic.Mosaic


class KerasMtcnn:
    """MTCNN (P-Net, R-Net, O-Net) as Keras 3 models on the ``mtcnn`` package's weights. Thread-safe.

    Runs on whichever Keras backend is active (TensorFlow, JAX, torch) and matches the package's
    results on the same photo.
    """

    def __init__(self, weights: Path | None = None) -> None:
        import keras

        from picmetric_core.models.compiled import compiled_predict

        folder = weights or weights_dir()
        pnet = load_package_weights(build_pnet(), folder / "pnet.lz4", PNET_LAYERS)
        rnet = load_package_weights(build_rnet(), folder / "rnet.lz4", RNET_LAYERS)
        onet = load_package_weights(build_onet(), folder / "onet.lz4", ONET_LAYERS)
        self._pnet = runtime_copy(pnet, build_pnet, ("conv4-1", "conv4-2"))
        self._rnet = runtime_copy(rnet, build_rnet, ("fc5-1", "fc5-2"))
        self._onet = runtime_copy(onet, build_onet, ("fc6-1", "fc6-2", "fc6-3"))
        self._predicts = self._keras_predicts = {net: compiled_predict(getattr(self, f"_{net}")) for net in NETWORKS}
        _compile_host_kernels()
        self._lock = threading.Lock()
        self.info = ModelInfo(
            role="faces",
            name="MTCNN (Keras 3)",
            weights=weights_label(folder),
            full=True,
            note=f"keras backend: {keras.backend.backend()}",
        )

    @classmethod
    def kept(cls, kept: dict[str, KeptModel], info: ModelInfo, artefacts: Path) -> KerasMtcnn:
        """The detector whose three networks an earlier start converted (:attr:`kept_models`, by network),
        run by OpenVINO without Keras. It runs only as kept (no :meth:`run_on`)."""
        detector = cls.__new__(cls)
        detector._pnet = detector._rnet = detector._onet = detector._keras_predicts = None
        detector._predicts = {net: kept_predictor(kept[net], artefacts) for net in NETWORKS}
        _compile_host_kernels()
        detector._lock = threading.Lock()
        detector.info = info
        return detector

    @property
    def kept_models(self) -> dict[str, KeptModel] | None:
        """Each network's converted model, where it is kept on disk (None unless all three are)."""
        kept = {net: kept_model(predict) for net, predict in self._predicts.items()}
        return kept if all(kept.values()) else None

    def run_on(self, engine: Engine, artefacts: Path | None = None) -> KerasMtcnn:
        """This detector with its three networks run by ``engine`` (the same weights, shared)."""
        if self._keras_predicts is None:
            raise ValueError("a face detector read back from its converted models runs only as it was kept")
        clone = copy.copy(self)
        clone._predicts = self._keras_predicts
        if engine.runtime != "keras":
            clone._predicts = {
                net: predictor(getattr(self, f"_{net}"), engine, artefacts, self.info.weights) for net in NETWORKS
            }
        clone._lock = threading.Lock()
        clone.info = replace(self.info, runtime=engine.describe())
        return clone

    def detect_faces(self, rgb: np.ndarray, min_confidence: float = RAW_FACE_SCORE) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, most confident first.

        Args:
            rgb: the image, HxWx3 uint8 in RGB order.
            min_confidence: the lowest O-Net face probability kept.

        Returns:
            Faces with boxes and landmarks in the image's pixels.

        Raises:
            ValueError: when ``rgb`` is not an HxWx3 uint8 array.

        Example:
            >>> faces = KerasMtcnn().detect_faces(skimage.data.astronaut())
            >>> len(faces), round(faces[0].landmarks["nose"].x)
            (1, 224)
        """
        return self.detect_faces_batch([rgb], min_confidence)[0]

    def detect_faces_batch(
        self, images: Sequence[np.ndarray], min_confidence: float = RAW_FACE_SCORE
    ) -> list[list[Face]]:
        """:meth:`detect_faces` for several images of any sizes, one list per image, in order.

        Pyramid levels of the same padded shape run as one P-Net batch whichever image they come
        from; R-Net and O-Net see every image's candidates in one batch each. Each image's faces are
        those :meth:`detect_faces` finds on it alone.

        Example:
            >>> astronaut, chelsea = KerasMtcnn().detect_faces_batch([skimage.data.astronaut(), skimage.data.chelsea()])
            >>> len(astronaut), len(chelsea)
            (1, 0)
        """
        for rgb in images:
            _check_rgb(rgb)
        threshold = min(min_confidence, RAW_FACE_SCORE)
        with self._lock:
            rows = self._detect_rows(list(images), threshold)
        return [_faces(image_rows, min_confidence) for image_rows in rows]

    def _detect_rows(self, images: list[np.ndarray], threshold_onet: float) -> list[np.ndarray]:
        """The three stages on each image: rows ``x1, y1, x2, y2, score`` + 10 landmark values (xs, ys)."""
        photos = [rgb if min(rgb.shape[:2]) >= PNET_WINDOW else None for rgb in images]
        boxes = self._proposals(photos)
        boxes = self._per_stage(self._refined, photos, boxes)
        faces = self._per_stage(lambda imgs, bxs: self._outputs(imgs, bxs, threshold_onet), photos, boxes)
        return [_clip_to(rows, rgb.shape[:2]) for rows, rgb in zip(faces, images, strict=True)]

    @staticmethod
    def _per_stage(stage: Stage, images: list[np.ndarray | None], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Runs ``stage`` once on the images that still have candidates; the others get no rows."""
        live = [i for i, b in enumerate(boxes) if len(b)]
        out = [np.empty((0, 15)) for _ in boxes]
        if live:
            for i, rows in zip(live, stage([images[i] for i in live], [boxes[i] for i in live]), strict=True):
                out[i] = rows
        return out

    def _proposals(self, images: list[np.ndarray | None]) -> list[np.ndarray]:
        """P-Net's candidate boxes on each photo (uint8 RGB; None: too small to look at)."""
        levels = [_pyramid(image) if image is not None else [] for image in images]
        maps = self._pnet_maps([[scaled for _, scaled in image_levels] for image_levels in levels])
        proposals = []
        for image_levels, image_maps in zip(levels, maps, strict=True):
            per_scale = [
                package_nms(pnet_boxes(heads[..., :4], heads[..., 4], scale), NMS_PNET_SCALE)
                for (scale, _), heads in zip(image_levels, image_maps, strict=True)
            ]
            if not per_scale:
                proposals.append(np.empty((0, 5)))
                continue
            proposals.append(to_square(package_nms(sort_by_score(np.concatenate(per_scale)), NMS_PNET_ALL)))
        return proposals

    def _pnet_maps(self, images_levels: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
        """P-Net's output (offsets and face logit, ``(h, w, 5)``) for every level of every image, cropped to the
        level's cells.

        Each image's small levels share one canvas (:mod:`~picmetric_core.models.pyramid_mosaic`);
        canvases of one shape, whichever image they come from, run as one batch.
        """
        jobs: list[CanvasJob] = []
        for index, levels in enumerate(images_levels):
            shapes = [level.shape[:2] for level in levels]
            jobs.extend(CanvasJob(index, [k], mosaic.pack([shape])) for k, shape in enumerate(shapes[:ALONE_LEVELS]))
            small = shapes[ALONE_LEVELS:]
            if small:
                jobs.append(CanvasJob(index, list(range(ALONE_LEVELS, len(shapes))), mosaic.pack(small)))
        groups: dict[tuple[int, int], list[CanvasJob]] = {}
        for job in jobs:
            groups.setdefault((job.layout.height, job.layout.width), []).append(job)
        maps: list[list] = [[None] * len(levels) for levels in images_levels]
        for (height, width), group in groups.items():
            per_call = max(1, min(MAX_PNET_BATCH, PNET_CALL_PIXELS // (height * width)))
            for start in range(0, len(group), per_call):
                chunk = group[start : start + per_call]
                canvases = [mosaic.canvas([images_levels[j.image][k] for k in j.levels], j.layout) for j in chunk]
                (heads,) = self._predicts["pnet"](list(_stacked(canvases)))
                for row, job in enumerate(chunk):
                    for k, place in zip(job.levels, job.layout.placements, strict=True):
                        maps[job.image][k] = mosaic.level_map(heads[row], place)
        return maps

    def _refined(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        (heads,) = _predict_patches(self._predicts["rnet"], _patches(images, boxes, 24))
        out = []
        for image_boxes, (image_heads,) in zip(boxes, _split(boxes, heads), strict=True):
            refined = refine(image_boxes, image_heads[:, :4], face_probability(image_heads[:, 4]))
            refined = refined[refined[:, 4] > THRESHOLD_RNET]
            out.append(to_square(package_nms(sort_by_score(refined), NMS_RNET)))
        return out

    def _outputs(self, images: list[np.ndarray], boxes: list[np.ndarray], threshold: float) -> list[np.ndarray]:
        (heads,) = _predict_patches(self._predicts["onet"], _patches(images, boxes, 48))
        out = []
        for image_boxes, (image_heads,) in zip(boxes, _split(boxes, heads), strict=True):
            scores = face_probability(image_heads[:, 14])
            landmarks = place_landmarks(image_heads[:, 4:14], image_boxes)
            rows = np.concatenate([refine(image_boxes, image_heads[:, :4], scores), landmarks], axis=1)
            rows = rows[rows[:, 4] > threshold]
            out.append(package_nms(sort_by_score(rows), NMS_ONET, method="min"))
        return out


def _compile_host_kernels() -> None:
    """Has numba compile the pyramid and crop kernels (or read its cache) while the models load rather than
    on the first photo."""
    blank = np.zeros((PNET_WINDOW * 2, PNET_WINDOW * 2, 3), np.uint8)
    compile_kernels()
    crop_and_resize(blank, np.array([[0.0, 0.0, 10.0, 10.0]]), 24, BACKGROUND)


def _pyramid(rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(scale, the photo's pixels averaged down to it) for each pyramid level P-Net can look at."""
    height, width = rgb.shape[:2]
    scales = [float(s) for s in scale_pyramid(height, width) if min(int(height * s), int(width * s)) >= PNET_WINDOW]
    sizes = [(int(height * s), int(width * s)) for s in scales]
    return list(zip(scales, area_levels(rgb, sizes), strict=True))


def _patches(images: list[np.ndarray], boxes: list[np.ndarray], size: int) -> np.ndarray:
    return np.concatenate([crop_and_resize(image, b, size, BACKGROUND) for image, b in zip(images, boxes, strict=True)])


def _split(boxes: list[np.ndarray], *outputs: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Each network output cut back into one piece per image, in the order the patches were stacked."""
    edges = np.cumsum([len(b) for b in boxes])[:-1]
    pieces = [np.split(output, edges) for output in outputs]
    return list(zip(*pieces, strict=True))


def _clip_to(faces: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    faces = faces.copy()
    faces[:, [0, 2]] = np.clip(faces[:, [0, 2]], 0, width - 1)
    faces[:, [1, 3]] = np.clip(faces[:, [1, 3]], 0, height - 1)
    return faces


def _faces(rows: np.ndarray, min_confidence: float) -> list[Face]:
    faces = [_to_face(row) for row in rows if row[4] >= min_confidence]
    return sorted(faces, key=lambda f: f.score, reverse=True)


_CALLS: weakref.WeakKeyDictionary[keras.Model, Callable] = weakref.WeakKeyDictionary()


def _predict(model: keras.Model, inputs: np.ndarray | tuple[np.ndarray, ...]) -> list[np.ndarray]:
    from picmetric_core.models.compiled import compiled_predict

    if model not in _CALLS:
        _CALLS[model] = compiled_predict(model)
    return _CALLS[model](list(inputs) if isinstance(inputs, tuple) else inputs)


def _stacked(canvases: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Canvases of one shape as a P-Net batch (on JAX padded with blank canvases to a power of two)."""
    count = _batch_bucket(len(canvases), smallest=1)
    if count == 1:  # one canvas: a view with a batch axis, not a copy (the largest level alone is 1.3 MB)
        return canvases[0][0][None], canvases[0][1][None]
    image = np.zeros((count, *canvases[0][0].shape), np.float32)
    mask = np.full((count, *canvases[0][1].shape), mosaic.PAD_ACTIVATION, np.float32)
    for row, (level_image, level_mask) in enumerate(canvases):
        image[row], mask[row] = level_image, level_mask
    return image, mask


def _predict_patches(predict: Predict, patches: np.ndarray) -> list[np.ndarray]:
    count = len(patches)
    bucket = _batch_bucket(count)
    if bucket == count:
        return predict(patches)
    padded = np.zeros((bucket, *patches.shape[1:]), np.float32)
    padded[:count] = patches
    return [o[:count] for o in predict(padded)]


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(f"MTCNN needs an HxWx3 uint8 RGB image, got shape {shape} dtype {dtype}")


def _to_face(row: np.ndarray) -> Face:
    xs, ys = row[5:10], row[10:15]
    return Face(
        score=float(row[4]),
        box=Box(*(float(v) for v in row[:4])),
        landmarks={name: Point(float(x), float(y)) for name, x, y in zip(LANDMARK_NAMES, xs, ys, strict=True)},
    )


def load_keras_face_detector() -> KerasMtcnn:
    return KerasMtcnn()
