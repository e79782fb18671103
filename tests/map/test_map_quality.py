"""The map's clusters on real photos through the real networks: edited copies land in their photo's cluster,
and different photos are never merged."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from picmetric_core.intake.images import decode_for
from picmetric_core.service import PicMetricService
from picmetric_core.similar.variants import VARIANTS
from tests.support.photos import darknet_photo, jpeg_bytes, skimage_photo
from tests.support.services import make_settings

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
EDITS = ("resized", "cropped", "everything")


@pytest.fixture(scope="module")
def service(tmp_path_factory, empty_models_dir, analyzer):
    settings = make_settings(tmp_path_factory.mktemp("map-quality"), models_dir=empty_models_dir)
    service = PicMetricService(settings, analyzer)
    photos = {name: skimage_photo(name).rgb for name in PHOTOS}
    photos["dog"] = np.asarray(Image.open(darknet_photo("dog.jpg")).convert("RGB"))
    for name, rgb in photos.items():
        for edit, image in [("original", rgb)] + [(e, VARIANTS[e](rgb)) for e in EDITS]:
            service.submit(decode_for(settings, jpeg_bytes(image)), filename=f"{name}-{edit}.jpg")
    yield service
    service.close()


@pytest.mark.slow
def test_edited_copies_land_in_their_photos_cluster_and_different_photos_stay_apart(service):
    view = service.map_view()
    cluster = {p.filename: p.cluster for p in view.points}

    assert len(view.points) == 5 * (1 + len(EDITS))
    for name in (*PHOTOS, "dog"):
        own = {cluster[f"{name}-{edit}.jpg"] for edit in ("original", *EDITS)}
        assert len(own) == 1 and own != {-1}, name
    assert len({cluster[f"{name}-original.jpg"] for name in PHOTOS}) == len(PHOTOS)


@pytest.mark.slow
def test_a_photo_with_copies_is_less_unique_than_a_new_photo_alone(service, analyzer):
    lone = service.submit(decode_for(service.settings, darknet_photo("horses.jpg").read_bytes()), filename="horses.jpg")
    view = service.map_view()
    uniqueness = {p.filename: p.uniqueness for p in view.points}

    assert view.fit.photos == 20  # placed without a refit
    assert uniqueness["horses.jpg"] > max(uniqueness[f"{name}-original.jpg"] for name in PHOTOS)
    assert service.uniqueness(lone.record.md5) == pytest.approx(uniqueness["horses.jpg"])
