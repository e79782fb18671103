"""Shared fixtures: real photos, and the real networks loaded once for the whole run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["tests.fixtures_services"]

DARKNET_DATA = Path("/usr/share/darknet/data")

LIMITS = {"max_bytes": 20 * 1024 * 1024, "max_pixels": 50_000_000}
"""``decode_image``'s limits as the default settings set them (for helpers outside fixtures)."""


def darknet_photo(name: str) -> Path:
    """A photo shipped by Debian's ``darknet`` package (bootstrap.sh installs it)."""
    path = DARKNET_DATA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `bash bootstrap.sh test` (it installs Debian's darknet package)")
    return path


def jpeg_bytes(rgb: np.ndarray, quality: int = 92) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def limits() -> dict[str, int]:
    """The intake limits of the default settings, as ``decode_image`` takes them."""
    from picmetric_core.config import Settings

    defaults = Settings.model_fields
    shared = {"max_bytes": defaults["max_image_bytes"].default, "max_pixels": defaults["max_image_pixels"].default}
    assert shared == LIMITS
    return shared


@pytest.fixture(scope="session")
def empty_models_dir(tmp_path_factory) -> Path:
    """A models folder without full weights, so the suite always runs the registry-shipped models."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def analyzer(empty_models_dir):
    """The real three networks, loaded once for every test that needs them."""
    from picmetric_core.config import Settings
    from picmetric_core.pipeline import get_analyzer

    return get_analyzer(Settings(models_dir=empty_models_dir))


@pytest.fixture(scope="session")
def dog_jpg() -> bytes:
    return darknet_photo("dog.jpg").read_bytes()


@pytest.fixture(scope="session")
def person_jpg() -> bytes:
    return darknet_photo("person.jpg").read_bytes()


@pytest.fixture(scope="session")
def astronaut_png() -> bytes:
    from skimage import data

    return png_bytes(data.astronaut())


NETWORK_FIXTURES = {"analyzer", "cluster"}
"""Fixtures that load the real networks (the batch tests' Ray cluster does, in its actors): every test
using one must be marked ``slow``."""


def pytest_collection_modifyitems(config, items) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if NETWORK_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError("these tests load the networks but are not marked slow:\n" + "\n".join(unmarked))
