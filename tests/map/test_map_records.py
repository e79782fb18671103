"""The map on SQLite and Postgres with made-up embeddings: fit, resume, place without a refit, read, delete."""

from __future__ import annotations

import pytest

from picmetric_core.history import HistoryQuery
from picmetric_core.map import layout
from picmetric_core.service import PicMetricService
from picmetric_core.store.database import session_factory
from tests.support.api import NoNetworks
from tests.support.map_rows import add_photos, themed_vectors
from tests.support.rows import md5_of
from tests.support.services import make_settings

THEMES = ("dog", "cat", "car", "boat")
PER_THEME = 15  # 60 photos: fitted by UMAP


@pytest.fixture(params=["sqlite", "postgres"])
def service(request, tmp_path):
    overrides = {"similar_index": "memory"}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_pg_url")
    service = PicMetricService(make_settings(tmp_path, **overrides), NoNetworks())
    yield service
    service.close()


def _names(theme: str) -> list[str]:
    return [f"{theme}-{i}" for i in range(PER_THEME)]


@pytest.fixture
def themed(service) -> PicMetricService:
    vectors = themed_vectors(len(THEMES), PER_THEME)
    names = [name for theme in THEMES for name in _names(theme)]
    labels = [theme for theme in THEMES for _ in range(PER_THEME)]
    with session_factory(service.engine).begin() as session:
        add_photos(session, names, vectors, labels)
        add_photos(session, ["old-photo"], None, ["dog"], first=100)  # analysed before embeddings
    return service


def test_a_fit_places_every_photo_with_an_embedding_in_clusters_named_by_their_label(themed):
    report = themed.fit_map()
    view = themed.map_view()

    assert report is not None and report.method == "umap" and report.photos == len(THEMES) * PER_THEME
    assert {p.md5 for p in view.points} == {md5_of(n) for t in THEMES for n in _names(t)}
    assert view.without_embedding == 1 and view.unplaced == 0
    cluster_of = {p.md5: p.cluster for p in view.points}
    for theme in THEMES:
        clusters = {cluster_of[md5_of(n)] for n in _names(theme)}
        assert len(clusters) == 1 and clusters != {-1}, theme
    assert sorted(c.label for c in view.fit.clusters) == sorted(THEMES)
    assert {c.name for c in view.fit.clusters} == {f"{t} · {PER_THEME}" for t in THEMES}
    assert all(0.0 <= p.uniqueness <= 1.0 for p in view.points)


def test_new_photos_are_placed_by_their_neighbours_without_a_refit(themed):
    themed.fit_map()
    fitted = themed.map_view()
    vectors = themed_vectors(len(THEMES), PER_THEME + 1)  # the same centres, one more photo each
    with session_factory(themed.engine).begin() as session:
        add_photos(session, ["cat-new"], vectors[[2 * (PER_THEME + 1) - 1]], ["cat"], first=200)

    view = themed.map_view()

    assert view.fit.id == fitted.fit.id
    new = next(p for p in view.points if p.md5 == md5_of("cat-new"))
    cats = [p for p in view.points if p.filename.startswith("cat-") and p.md5 != new.md5]
    assert new.cluster == cats[0].cluster
    xs, ys = [p.x for p in cats], [p.y for p in cats]
    assert min(xs) - 1 <= new.x <= max(xs) + 1 and min(ys) - 1 <= new.y <= max(ys) + 1
    assert themed.uniqueness(new.md5) == pytest.approx(new.uniqueness)


def test_an_interrupted_fit_resumes_from_its_last_stage(themed):
    class Interrupted(Exception):
        pass

    def stop_while_writing(stage: str, done: int, total: int) -> None:
        if stage == "points":
            raise Interrupted

    with pytest.raises(Interrupted):
        themed.fit_map(on_progress=stop_while_writing)

    report = themed.fit_map()

    assert report.resumed == "laid_out"
    assert len(themed.map_view().points) == len(THEMES) * PER_THEME


def test_the_filters_keep_their_photos_and_a_deleted_photo_leaves_the_map(themed):
    themed.fit_map()
    view = themed.map_view(HistoryQuery(label="cat"))
    assert view.matching == {md5_of(n) for n in _names("cat")}

    themed.delete([md5_of("dog-0")])

    assert md5_of("dog-0") not in {p.md5 for p in themed.map_view().points}


def test_few_photos_are_mapped_by_pca_on_their_first_read(service):
    with session_factory(service.engine).begin() as session:
        add_photos(session, ["a", "b", "c"], themed_vectors(3, 1), ["dog", "cat", "car"])

    view = service.map_view()

    assert view.fit is not None and view.fit.method == "pca" and len(view.points) == 3
    assert layout.method_for(3) == "pca"
