"""The ImageNet classifier: the offline EfficientNet-Lite2/Lite0 ports, the ResNet50 path, and the .pth reader."""

from __future__ import annotations

import collections
import pickle
import sys
import types
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image

from picmetric_core.errors import WeightsError
from picmetric_core.models import efficientnet_lite, weights
from picmetric_core.models.classifier import KerasClassifier, center_crop, load_classifier, load_imagenet_names
from picmetric_core.models.pth import LEGACY_MAGIC, LEGACY_PROTOCOL, UnsafePickleError, load_state_dict
from tests.support.photos import darknet_photo
from tests.support.synthetic_weights import write_legacy_h5

CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def offline_classifier(tmp_path_factory: pytest.TempPathFactory) -> KerasClassifier:
    return load_classifier(tmp_path_factory.mktemp("no-models"))


@pytest.fixture(scope="module")
def lite0_classifier(tmp_path_factory: pytest.TempPathFactory) -> KerasClassifier:
    return load_classifier(tmp_path_factory.mktemp("no-models"), "lite0")


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    """A models folder holding an untrained ResNet50 in the official file's legacy h5 layout."""
    models_dir = tmp_path_factory.mktemp("models")
    model = keras.applications.ResNet50(weights=None)
    write_legacy_h5(model, models_dir / weights.RESNET50.filename)
    return models_dir, model


def _assert_ranked(results: list, k: int, labels: list[str]) -> None:
    scores = [r.score for r in results]
    assert len(results) == k
    assert scores == sorted(scores, reverse=True)
    assert 0.0 <= sum(scores) <= 1.0 + 1e-5
    assert all(r.label == labels[r.class_id] for r in results)


def test_label_file_has_imagenet_order() -> None:
    names = load_imagenet_names()
    assert len(names) == 1000
    assert names[281] == "tabby"
    assert names[285] == "Egyptian cat"


@pytest.mark.slow
def test_offline_classifier_sees_a_cat(offline_classifier: KerasClassifier) -> None:
    results = offline_classifier.classify(skimage.data.chelsea())
    _assert_ranked(results, 5, offline_classifier.labels)
    assert CATS & {r.label for r in results[:3]}


# Independent reference, printed by bench/classifier_torch_reference.py (torch 2.13, CPU, in a venv of its
# own; its docstring says how): the same shipped .pth files run by PyTorch with a minimal EfficientNet-Lite
# forward written against torch.nn.functional and torchvision-style Resize + CenterCrop done by PIL, not by
# this project's code. Top-5 labels and their probabilities, rounded to 3 decimals. On eight photos (its
# --port mode) the port's probabilities differ from PyTorch's by at most 8.6e-7 given the same crop, and by
# at most 3.6e-4 with each side's own crop (the two crops differ by a pixel level or two).
TORCH_REFERENCE = {
    ("lite2", "chelsea"): {
        "Egyptian cat": 0.601,
        "tiger cat": 0.129,
        "tabby": 0.104,
        "lynx": 0.011,
        "lens cap": 0.002,
    },
    ("lite2", "dog.jpg"): {
        "malamute": 0.269,
        "Eskimo dog": 0.045,
        "mountain bike": 0.042,
        "bicycle-built-for-two": 0.033,
        "Siberian husky": 0.021,
    },
    ("lite0", "chelsea"): {
        "tiger cat": 0.395,
        "Egyptian cat": 0.355,
        "tabby": 0.170,
        "lynx": 0.014,
        "window screen": 0.001,
    },
    ("lite0", "dog.jpg"): {
        "malamute": 0.378,
        "German shepherd": 0.280,
        "Eskimo dog": 0.024,
        "keeshond": 0.021,
        "Tibetan mastiff": 0.017,
    },
}
DOG_BREEDS = {"malamute", "Eskimo dog", "Siberian husky", "German shepherd"}


def _test_photo(name: str) -> np.ndarray:
    if name == "chelsea":
        return skimage.data.chelsea()
    with Image.open(darknet_photo(name)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
@pytest.mark.parametrize("photo, sensible", [("chelsea", CATS), ("dog.jpg", DOG_BREEDS)])
def test_default_classifier_names_the_animal(offline_classifier: KerasClassifier, photo: str, sensible: set) -> None:
    assert offline_classifier.classify(_test_photo(photo), top_k=1)[0].label in sensible


@pytest.mark.slow
@pytest.mark.parametrize("variant, photo", sorted(TORCH_REFERENCE))
def test_efficientnet_port_reproduces_pytorch_top5(
    offline_classifier: KerasClassifier, lite0_classifier: KerasClassifier, variant: str, photo: str
) -> None:
    # Wrong padding, a transposed kernel or a wrong crop size moves these.
    classifier = offline_classifier if variant == "lite2" else lite0_classifier
    expected = TORCH_REFERENCE[variant, photo]
    results = classifier.classify(_test_photo(photo), top_k=5)
    assert [r.label for r in results] == list(expected)
    assert [r.score for r in results] == pytest.approx(list(expected.values()), abs=0.002)


@pytest.mark.slow
def test_offline_classifier_says_it_is_a_stand_in(offline_classifier: KerasClassifier) -> None:
    info = offline_classifier.info
    assert (info.role, info.name, info.full, info.input_size) == ("classifier", "EfficientNet-Lite2", False, 260)
    assert "ResNet50 weights not found" in info.note
    assert "picmetric weights fetch" in info.note


@pytest.mark.slow
def test_lite0_is_the_fast_option_and_says_so(lite0_classifier: KerasClassifier) -> None:
    info = lite0_classifier.info
    assert (info.name, info.full, info.input_size) == ("EfficientNet-Lite0", False, 224)


def test_a_state_dict_missing_a_stage_is_refused_not_built(tmp_path: Path) -> None:
    state = load_state_dict(weights.locate(weights.EFFICIENTNET_LITE2, Path()))
    last_block = max(int(name.split(".")[1]) for name in state if name.startswith("_blocks."))
    truncated = {name: value for name, value in state.items() if not name.startswith(f"_blocks.{last_block}.")}
    with pytest.raises(WeightsError, match="not an EfficientNet-Lite state dict"):
        efficientnet_lite.shape_from_state(truncated)


def test_unknown_classifier_choice_is_refused_with_the_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lite0.*lite2"):
        load_classifier(tmp_path, "lite9")


@pytest.mark.slow
def test_resnet50_wins_over_the_lite_choice(resnet_dir: tuple[Path, keras.Model]) -> None:
    models_dir, _ = resnet_dir
    assert load_classifier(models_dir, "lite0").info.name == "ResNet50"


@pytest.mark.slow
def test_batch_matches_single_images(offline_classifier: KerasClassifier) -> None:
    images = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.camera()]
    batch = offline_classifier.classify_batch(images, top_k=3)
    for image, results in zip(images, batch, strict=True):
        single = offline_classifier.classify(image, top_k=3)
        assert [r.class_id for r in results] == [r.class_id for r in single]
        assert [r.score for r in results] == pytest.approx([r.score for r in single], abs=1e-5)


@pytest.mark.slow
def test_resnet50_is_picked_when_its_weights_are_present(resnet_dir: tuple[Path, keras.Model]) -> None:
    models_dir, original = resnet_dir
    clf = load_classifier(models_dir)
    assert (clf.info.name, clf.info.full) == ("ResNet50", True)
    results = clf.classify(skimage.data.chelsea())
    _assert_ranked(results, 5, clf.labels)
    # The file really was loaded: the classifier agrees with the model that wrote it.
    crop = center_crop(skimage.data.chelsea())[None].astype(np.float32)
    expected = original.predict_on_batch(keras.applications.resnet50.preprocess_input(crop))[0]
    assert [r.score for r in results] == pytest.approx(sorted(expected, reverse=True)[:5], rel=1e-4)


def test_center_crop_handles_any_shape() -> None:
    assert center_crop(np.zeros((10, 4000, 3), np.uint8)).shape == (224, 224, 3)
    assert center_crop(np.zeros((600, 50), np.uint8)).shape == (224, 224, 3)
    assert center_crop(np.zeros((300, 300, 4), np.uint8)).shape == (224, 224, 3)
    with pytest.raises(ValueError):
        center_crop(np.zeros((300, 300, 3), np.float32))
    with pytest.raises(ValueError):
        center_crop(np.zeros((0, 300, 3), np.uint8))


def test_pth_reader_reads_the_shipped_legacy_file() -> None:
    state = load_state_dict(weights.locate(weights.EFFICIENTNET_LITE0, Path()))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return os.system, (f"touch {self.marker}",)


def _legacy_header() -> bytes:
    return b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, LEGACY_PROTOCOL, {}))


def test_pth_reader_refuses_code_in_legacy_layout(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_header() + pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_state_dict(path)
    assert not marker.exists()


def test_pth_reader_refuses_code_in_zip_layout(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(UnsafePickleError, match="system"):
        load_state_dict(path)
    assert not marker.exists()


class _FakeStorage:
    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _fake_torch(monkeypatch: pytest.MonkeyPatch) -> tuple[types.FunctionType, type]:
    """Just enough of a ``torch`` module for pickle to write the names torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage = float_storage
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return _rebuild_tensor_v2, float_storage


def _write_zip_pth(
    path: Path, tensors: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch, stride_scale: int = 1
) -> None:
    """Write ``tensors`` as ``torch.save`` would; ``stride_scale`` > 1 forges strides past the storage."""
    rebuild, float_storage = _fake_torch(monkeypatch)
    storages = {}

    class Tensor:
        def __init__(self, array: np.ndarray) -> None:
            self.storage = _FakeStorage(np.ascontiguousarray(array.T).ravel())
            self.array = array
            storages[str(len(storages))] = self.storage

        def __reduce__(self) -> tuple:
            # Stored in Fortran order, so the reader must honour the strides.
            stride = tuple(int(s) * stride_scale for s in np.cumprod((1, *self.array.shape[:-1])))
            return rebuild, (self.storage, 0, self.array.shape, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> tuple | None:
            if isinstance(obj, _FakeStorage):
                key = next(k for k, s in storages.items() if s is obj)
                return ("storage", float_storage, key, "cpu", obj.array.size)
            return None

    state = collections.OrderedDict((name, Tensor(array)) for name, array in tensors.items())
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("archive/data.pkl", "w") as handle:
            Pickler(handle, protocol=2).dump(state)
        for key, storage in storages.items():
            archive.writestr(f"archive/data/{key}", storage.array.astype("<f4").tobytes())


def test_pth_reader_reads_zip_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    tensors = {"conv.weight": rng.random((4, 3, 2, 2), np.float32), "fc.bias": rng.random(5, np.float32)}
    path = tmp_path / "model.pth"
    _write_zip_pth(path, tensors, monkeypatch)
    monkeypatch.undo()  # the reader must not need the fake torch
    state = load_state_dict(path)
    assert list(state) == list(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(state[name], array)


def test_pth_reader_refuses_tensors_outside_their_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "forged.pth"
    _write_zip_pth(path, {"w": np.ones((4, 4), np.float32)}, monkeypatch, stride_scale=1000)
    monkeypatch.undo()
    with pytest.raises(WeightsError, match="storage"):
        load_state_dict(path)


@pytest.mark.slow
def test_classify_is_thread_safe(offline_classifier: KerasClassifier) -> None:
    images = [skimage.data.chelsea(), skimage.data.coffee()] * 4
    expected = [offline_classifier.classify(image, top_k=1)[0].class_id for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda image: offline_classifier.classify(image, top_k=1)[0].class_id, images))
    assert results == expected


@pytest.mark.slow
def test_unusable_resnet50_file_is_an_error_not_a_silent_fallback(tmp_path: Path) -> None:
    (tmp_path / weights.RESNET50.filename).write_bytes(b"not an hdf5 file")
    with pytest.raises(WeightsError, match="picmetric weights fetch"):
        load_classifier(tmp_path)
