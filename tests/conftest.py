"""Shared fixtures: real photos, and the real networks loaded once for the whole run."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from tests.support.photos import LIMITS, darknet_photo, png_bytes

pytest_plugins = ["tests.support.services", "tests.support.exports", "tests.support.history_page"]


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
