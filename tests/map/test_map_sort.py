"""History sorted and filtered by uniqueness on the map, on SQLite and Postgres: an outlier comes first, a range
keeps exactly its photos, photos not on the map come last (and never pass a uniqueness filter), keyset pages
follow the order."""

from __future__ import annotations

import numpy as np
import pytest

from picmetric_core.history import HistoryFilters, HistoryQuery
from picmetric_core.service import PicMetricService
from picmetric_core.store.database import session_factory
from tests.support.api import NoNetworks
from tests.support.map_rows import add_photos, themed_vectors
from tests.support.rows import md5_of
from tests.support.services import make_settings

THEMES = ("dog", "cat", "car")
PER_THEME = 6
NAMES = [f"{theme}-{i}" for theme in THEMES for i in range(PER_THEME)]


@pytest.fixture(params=["sqlite", "postgres"])
def service(request, tmp_path):
    overrides = {"similar_index": "memory"}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("fresh_pg_url")
    service = PicMetricService(make_settings(tmp_path, **overrides), NoNetworks())
    vectors = themed_vectors(len(THEMES), PER_THEME)
    outlier = themed_vectors(1, 1, seed=99)  # a theme of its own: nothing on the map is like it
    with session_factory(service.engine).begin() as session:
        add_photos(session, NAMES, vectors, [n.split("-")[0] for n in NAMES])
        add_photos(session, ["outlier"], outlier, ["boat"], first=50)
        add_photos(session, ["old-photo"], None, ["dog"], first=60)  # no embedding: not on the map
    service.fit_map()
    yield service
    service.close()


def uniqueness_by_md5(service: PicMetricService) -> dict[str, float]:
    return {p.md5: p.uniqueness for p in service.map_view().points}


def md5s(service: PicMetricService, query: HistoryQuery) -> list[str]:
    return [item.record.md5 for item in service.history(query).items]


def test_most_unique_first_puts_the_outlier_first_and_photos_off_the_map_last(service):
    order = md5s(service, HistoryQuery(sort="most_unique", limit=50))
    scores = uniqueness_by_md5(service)

    assert order[0] == md5_of("outlier")
    assert order[-1] == md5_of("old-photo")
    on_map = [scores[md5] for md5 in order[:-1]]
    assert on_map == sorted(on_map, reverse=True) and len(on_map) == len(NAMES) + 1


def test_least_unique_first_is_the_other_way_round_with_photos_off_the_map_still_last(service):
    order = md5s(service, HistoryQuery(sort="least_unique", limit=50))
    scores = uniqueness_by_md5(service)

    assert order[-2:] == [md5_of("outlier"), md5_of("old-photo")]
    on_map = [scores[md5] for md5 in order[:-1]]
    assert on_map == sorted(on_map)


@pytest.mark.parametrize("sort", ["most_unique", "least_unique", "newest"])
def test_keyset_pages_follow_the_order_of_one_long_page(service, sort):
    whole = md5s(service, HistoryQuery(sort=sort, limit=50))
    paged: list[str] = []
    query = HistoryQuery(sort=sort, limit=4)
    while True:
        page = service.history(query)
        paged += [item.record.md5 for item in page.items]
        if page.next_cursor is None:
            break
        query = HistoryQuery(sort=sort, limit=4, cursor=page.next_cursor)

    assert paged == whole and len(whole) == len(NAMES) + 2
    assert md5s(service, HistoryQuery(sort=sort, limit=4, page=2)) == whole[4:8]


def test_a_uniqueness_range_keeps_exactly_the_photos_in_it(service):
    scores = uniqueness_by_md5(service)
    low, high = np.quantile(list(scores.values()), [0.25, 0.75])
    expected = {md5 for md5, value in scores.items() if low <= value <= high}

    query = HistoryFilters(min_uniqueness=low, max_uniqueness=high).query(limit=50)

    assert set(md5s(service, query)) == expected and 0 < len(expected) < len(scores)
    assert service.count(query) == len(expected)
    assert service.map_view(query).matching == expected
    at_least = HistoryFilters(min_uniqueness=0.0).query(limit=50)
    assert set(md5s(service, at_least)) == set(scores)  # the photo not on the map is left out


def test_a_delete_by_uniqueness_takes_only_the_outlier(service):
    outlier = uniqueness_by_md5(service)[md5_of("outlier")]
    result = service.delete_matching(HistoryFilters(min_uniqueness=outlier).query(), dry_run=True)

    assert result.deleted == (md5_of("outlier"),)


def test_the_uniqueness_of_a_page_is_read_in_one_call(service):
    scores = uniqueness_by_md5(service)

    found = service.uniqueness_of([md5_of("outlier"), md5_of("dog-0"), md5_of("old-photo")])

    assert found == {md5_of("outlier"): scores[md5_of("outlier")], md5_of("dog-0"): scores[md5_of("dog-0")]}
    assert service.has_map()


@pytest.mark.parametrize(
    "values",
    [{"min_uniqueness": -0.1}, {"max_uniqueness": 1.5}, {"sort": "oldest"}, {"sort": "most_unique", "cursor": "abc"}],
)
def test_values_no_query_can_take_are_refused(values):
    with pytest.raises(ValueError):
        HistoryQuery(**values)
