"""Four real photos analysed into a SQLite database and a local store, for the export and history-filter tests.

Loaded by ``tests/conftest.py`` as a pytest plugin, so that any module can ask for ``stored``.
"""

from __future__ import annotations

import pytest

from picmetric_core.intake.images import decode_for
from picmetric_core.service import PicMetricService
from tests.support.photos import darknet_photo
from tests.support.services import make_settings

TOKEN = "export-token-" + "z" * 20
"""The API token of the ``stored`` service's settings."""


@pytest.fixture(scope="module")
def stored(tmp_path_factory, analyzer, dog_jpg, person_jpg, astronaut_png):
    """A service holding four analysed photos; yields (settings, service, {filename: md5})."""
    settings = make_settings(tmp_path_factory.mktemp("exports"), api_token=TOKEN)
    service = PicMetricService(settings, analyzer)
    photos = {
        "dog.jpg": dog_jpg,
        "person.jpg": person_jpg,
        "astronaut.png": astronaut_png,
        "eagle.jpg": darknet_photo("eagle.jpg").read_bytes(),
    }
    md5s = {
        name: service.submit(decode_for(settings, data), filename=name).analysis.md5 for name, data in photos.items()
    }
    yield settings, service, md5s
    service.close()
