"""A map read kept on disk for the next server process: a restarted app opens the map without reading the
points again, and still shows what changed since (a photo stored, deleted), with the filters' dimming."""

from __future__ import annotations

import time

import pytest

from picmetric_core.history import HistoryQuery
from picmetric_core.service import PicMetricService
from picmetric_core.store.database import session_factory
from picmetric_ui import map_views, resources
from tests.support.map_rows import add_photos, themed_vectors
from tests.support.rows import md5_of
from tests.support.services import make_settings

NAMES = [f"dog-{i}" for i in range(10)] + [f"cat-{i}" for i in range(10)]


@pytest.fixture
def app_service(tmp_path, monkeypatch) -> PicMetricService:
    """The app's service on a fitted map of 20 photos; its map reads are counted in ``service.reads``."""
    settings = make_settings(tmp_path, similar_index="memory")
    monkeypatch.setattr(resources, "settings", lambda: settings)
    monkeypatch.setattr(map_views, "KEEP_AFTER_S", 0.0)
    map_views.clear()
    service = resources.service()
    with session_factory(service.engine).begin() as session:
        add_photos(session, NAMES, themed_vectors(2, 10), [name.split("-")[0] for name in NAMES])
    service.fit_map()
    reads = []
    read = service.map_view
    monkeypatch.setattr(service, "map_view", lambda query=None: reads.append(query) or read(query))
    service.reads = reads
    yield service
    map_views.clear()


def restart() -> None:
    """What a new server process holds of earlier reads in memory: nothing."""
    map_views.clear()


def kept_once_written(folder, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while len(list(folder.glob("*.npz"))) < count:
        assert time.monotonic() < deadline, "the read was not kept on disk"
        time.sleep(0.05)


def test_a_restarted_app_shows_the_kept_read_without_reading_the_points_again(app_service, tmp_path):
    first = map_views.drawn_points(HistoryQuery())
    kept_once_written(tmp_path / map_views.KEPT_DIR)
    restart()

    again = map_views.drawn_points(HistoryQuery())

    assert len(app_service.reads) == 1  # the second came from the disk
    assert again.md5s == first.md5s and again.file == first.file  # the same points file: the browser has it
    assert again.view.fit == first.view.fit and again.view.matching == first.view.matching
    assert list(again.view.points) == list(first.view.points)
    assert again.files("Top class").legend == first.files("Top class").legend


def test_filters_still_dim_what_they_exclude_after_a_restart(app_service, tmp_path):
    cats = HistoryQuery(label="cat")
    first = map_views.drawn_points(cats)
    kept_once_written(tmp_path / map_views.KEPT_DIR)
    restart()

    files = map_views.drawn_points(cats).files("Top class")

    assert len(app_service.reads) == 1
    assert files.outside == 10 and [entry.name for entry in files.legend] == ["cat (10)"]
    assert first.view.matching == {md5_of(f"cat-{i}") for i in range(10)}


def test_a_photo_stored_or_deleted_since_the_read_was_kept_shows_after_a_restart(app_service, tmp_path):
    map_views.drawn_points(HistoryQuery())
    kept_once_written(tmp_path / map_views.KEPT_DIR)
    with session_factory(app_service.engine).begin() as session:
        add_photos(session, ["dog-new"], themed_vectors(2, 10)[:1], ["dog"], first=100)
    restart()

    stored = map_views.drawn_points(HistoryQuery())
    app_service.delete([md5_of("dog-0")])
    restart()
    deleted = map_views.drawn_points(HistoryQuery())

    assert len(app_service.reads) == 3
    assert md5_of("dog-new") in stored.md5s and md5_of("dog-0") in stored.md5s  # placed on the new read
    assert md5_of("dog-0") not in deleted.md5s and md5_of("dog-new") in deleted.md5s
