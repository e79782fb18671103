"""Placing photos stored after a fit, from the fit's reduced space, on SQLite and Postgres with made-up
embeddings: copies land beside their photo, photos placed by another process and deleted photos are
accounted for, a refit starts a new space, a resumed fit keeps one, and a fit without one still places."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import delete, select, update

from picmetric_core.map import records
from picmetric_core.map.space import space_of
from picmetric_core.results import Signature
from picmetric_core.service import PicMetricService
from picmetric_core.similar.signature import compact_embedding
from picmetric_core.store.database import session_factory
from picmetric_core.store.orm import AnalysisRow, MapFitRow, SignatureRow, signature_row
from tests.support.api import NoNetworks
from tests.support.map_rows import CLASSIFIER, add_photos, themed_vectors
from tests.support.rows import md5_of
from tests.support.services import make_settings

THEMES = ("dog", "cat", "car", "boat")
PER_THEME = 15
VECTORS = themed_vectors(len(THEMES), PER_THEME)


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request, tmp_path):
    overrides = {"similar_index": "memory"}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_pg_url")
    return make_settings(tmp_path, **overrides)


@pytest.fixture
def fitted(settings) -> PicMetricService:
    service = PicMetricService(settings, NoNetworks())
    names = [f"{theme}-{i}" for theme in THEMES for i in range(PER_THEME)]
    with session_factory(service.engine).begin() as session:
        add_photos(session, names, VECTORS, [name.split("-")[0] for name in names])
        add_photos(session, ["dog-old"], None, ["dog"], first=100)  # analysed before embeddings
    service.fit_map()
    yield service
    service.close()


def _copy_of(service: PicMetricService, name: str, copy: str, first: int) -> None:
    """Store ``copy``: the embedding of ``name`` with a little noise (an edited copy)."""
    row = (THEMES.index(name.split("-")[0])) * PER_THEME + int(name.split("-")[1])
    noise = 0.01 * np.abs(np.random.default_rng(first).standard_normal(VECTORS.shape[1])) * VECTORS[row].std()
    with session_factory(service.engine).begin() as session:
        add_photos(session, [copy], (VECTORS[row] + noise)[None, :], [name.split("-")[0]], first=first)


def _points(service: PicMetricService) -> dict[str, records.MapPoint]:
    return {p.filename.removesuffix(".jpg"): p for p in service.map_view().points}


def test_a_copy_lands_beside_its_photo_in_its_cluster_and_is_less_unique(fitted):
    _copy_of(fitted, "cat-3", "cat-3-copy", first=500)

    points = _points(fitted)

    copy, cats = points["cat-3-copy"], [points[f"cat-{i}"] for i in range(PER_THEME)]
    assert copy.cluster == points["cat-3"].cluster != -1
    centres = {t: np.mean([(points[f"{t}-{i}"].x, points[f"{t}-{i}"].y) for i in range(PER_THEME)], 0) for t in THEMES}
    distance = {t: np.hypot(*(np.array([copy.x, copy.y]) - centre)) for t, centre in centres.items()}
    assert min(distance, key=distance.__getitem__) == "cat"
    cat_spread = max(np.hypot(c.x - centres["cat"][0], c.y - centres["cat"][1]) for c in cats)
    assert distance["cat"] <= cat_spread
    assert copy.uniqueness < min(c.uniqueness for c in cats)


def test_a_photo_placed_by_another_process_is_a_neighbour_of_the_next(fitted, settings):
    _points(fitted)  # this process loads the fit's space
    other = PicMetricService(settings, NoNetworks())
    try:
        _copy_of(other, "dog-5", "dog-5-a", first=600)
        other.map_view()  # placed by the other process
    finally:
        other.close()
    _copy_of(fitted, "dog-5", "dog-5-b", first=600)  # the same vector as dog-5-a

    points = _points(fitted)

    # dog-5-b's nearest are dog-5-a and dog-5, both copies: less unique than dog-5-a, which had one copy
    assert points["dog-5-b"].uniqueness < points["dog-5-a"].uniqueness
    assert points["dog-5-b"].cluster == points["dog-5"].cluster


def test_deleted_photos_are_not_neighbours(fitted):
    _points(fitted)
    fitted.delete([md5_of(f"car-{i}") for i in range(10)])
    _copy_of(fitted, "car-12", "car-12-copy", first=700)

    points = _points(fitted)

    assert points["car-12-copy"].cluster == points["car-12"].cluster != -1
    space = space_of(fitted._sessions, fitted.map_view().fit)
    space.catch_up(fitted._sessions)
    assert len(space) == len(THEMES) * PER_THEME - 10 + 1  # the deleted forgotten, the copy added


def test_a_refit_starts_a_new_space_and_places_on_the_new_coordinates(fitted):
    _copy_of(fitted, "boat-1", "boat-1-copy", first=800)
    first = fitted.map_view().fit
    first_space = space_of(fitted._sessions, first)
    fitted.delete([md5_of("boat-2")])

    report = fitted.fit_map()
    _copy_of(fitted, "boat-1", "boat-1-again", first=900)
    points = _points(fitted)

    assert report.fit_id != first.id and report.photos == len(THEMES) * PER_THEME  # one deleted, one copy
    space = space_of(fitted._sessions, fitted.map_view().fit)
    space.catch_up(fitted._sessions)
    assert space is not first_space and space.fit.id == report.fit_id
    assert len(space) == len(THEMES) * PER_THEME + 1  # the fit's photos and the one placed since
    assert points["boat-1-again"].cluster == points["boat-1"].cluster == points["boat-1-copy"].cluster != -1
    boats = [points[f"boat-{i}"] for i in range(PER_THEME) if i != 2]
    assert min(b.x for b in boats) - 1 <= points["boat-1-again"].x <= max(b.x for b in boats) + 1
    assert min(b.y for b in boats) - 1 <= points["boat-1-again"].y <= max(b.y for b in boats) + 1


def test_a_fit_interrupted_after_its_neighbours_resumes_to_a_map_that_places(fitted):
    class Interrupted(Exception):
        pass

    def stop_at_the_layout(stage: str, done: int, total: int) -> None:
        if stage == "layout":
            raise Interrupted

    with pytest.raises(Interrupted):
        fitted.fit_map(on_progress=stop_at_the_layout)
    report = fitted.fit_map()
    _copy_of(fitted, "dog-7", "dog-7-copy", first=1000)
    points = _points(fitted)

    assert report.resumed == "neighbours" and fitted.map_view().fit.id == report.fit_id
    assert points["dog-7-copy"].cluster == points["dog-7"].cluster != -1


def test_a_fit_that_kept_no_space_places_by_the_similarity_index(fitted):
    fit = fitted.map_view().fit
    with session_factory(fitted.engine).begin() as session:  # as fits finished before the map kept its space
        session.execute(update(MapFitRow).where(MapFitRow.id == fit.id).values(checkpoint=None))
    _copy_of(fitted, "cat-9", "cat-9-copy", first=1100)

    points = _points(fitted)

    assert space_of(session_factory(fitted.engine), fit) is None
    assert points["cat-9-copy"].cluster == points["cat-9"].cluster != -1


def test_an_old_photo_given_its_embedding_after_the_fit_is_placed(fitted):
    _points(fitted)
    with session_factory(fitted.engine).begin() as session:  # as `picmetric similar backfill` does
        analysis_id = session.scalar(select(AnalysisRow.id).where(AnalysisRow.md5 == md5_of("dog-old")))
        session.execute(delete(SignatureRow).where(SignatureRow.analysis_id == analysis_id))
        row = signature_row(Signature(1, compact_embedding(VECTORS[4]), embedding_model=CLASSIFIER))
        row.analysis_id = analysis_id
        session.add(row)

    points = _points(fitted)

    assert points["dog-old"].cluster == points["dog-4"].cluster != -1
