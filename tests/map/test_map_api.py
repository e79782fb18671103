"""``GET /v1/map`` and the analysis body's uniqueness, on the app with made-up embeddings (no networks)."""

from __future__ import annotations

import pytest

from picmetric_core.store.database import create_database_engine, session_factory, upgrade_schema
from tests.support.api import app_client
from tests.support.map_rows import add_photos, themed_vectors
from tests.support.rows import md5_of
from tests.support.services import make_settings


@pytest.fixture
def client(tmp_path):
    settings = make_settings(tmp_path, similar_index="memory")
    engine = create_database_engine(settings)
    upgrade_schema(engine)
    names = [f"{theme}-{i}" for theme in ("dog", "cat") for i in range(3)]
    with session_factory(engine).begin() as session:
        add_photos(session, names, themed_vectors(2, 3), [n.split("-")[0] for n in names])
        add_photos(session, ["old-photo"], None, ["dog"], first=50)
    engine.dispose()
    with app_client(settings) as client:
        yield client


def test_the_map_has_one_point_per_photo_with_an_embedding_and_none_without(client):
    body = client.get("/v1/map").json()

    assert sorted(p["md5"] for p in body["points"]) == sorted(
        md5_of(f"{t}-{i}") for t in ("dog", "cat") for i in range(3)
    )
    assert md5_of("old-photo") not in {p["md5"] for p in body["points"]}
    assert body["without_embedding"] == 1 and body["method"] == "pca"
    assert all(set(p) == {"md5", "x", "y", "cluster", "uniqueness"} for p in body["points"])


def test_the_history_filters_narrow_the_map(client):
    body = client.get("/v1/map", params={"label": "cat"}).json()
    assert {p["md5"] for p in body["points"]} == {md5_of(f"cat-{i}") for i in range(3)}
    assert client.get("/v1/map", params={"min_faces": -1}).status_code == 422


def test_the_analysis_body_carries_its_uniqueness(client):
    point = next(p for p in client.get("/v1/map").json()["points"] if p["md5"] == md5_of("dog-0"))

    assert client.get(f"/v1/analyses/{md5_of('dog-0')}").json()["uniqueness"] == pytest.approx(point["uniqueness"])
    assert client.get(f"/v1/analyses/{md5_of('old-photo')}").json()["uniqueness"] is None


def test_the_list_sorts_and_filters_by_uniqueness(client):
    scores = {p["md5"]: p["uniqueness"] for p in client.get("/v1/map").json()["points"]}
    most = client.get("/v1/analyses", params={"sort": "most_unique", "limit": 3}).json()
    rest = client.get("/v1/analyses", params={"sort": "most_unique", "cursor": most["next_cursor"]}).json()
    order = [item["md5"] for item in most["items"] + rest["items"]]

    assert [scores[md5] for md5 in order[:-1]] == sorted(scores.values(), reverse=True)
    assert order[-1] == md5_of("old-photo")
    assert [item["uniqueness"] for item in most["items"]] == [scores[md5] for md5 in order[:3]]

    middle = sorted(scores.values())[2]
    kept = client.get("/v1/analyses", params={"min_uniqueness": middle, "max_uniqueness": 1}).json()["items"]
    assert {item["md5"] for item in kept} == {md5 for md5, value in scores.items() if value >= middle}
    assert client.get("/v1/analyses", params={"sort": "oldest"}).status_code == 422
    assert client.get("/v1/analyses", params={"max_uniqueness": 2}).status_code == 422
    newest_cursor = client.get("/v1/analyses", params={"limit": 1}).json()["next_cursor"]
    assert client.get("/v1/analyses", params={"sort": "most_unique", "cursor": newest_cursor}).status_code == 422


def test_a_page_reads_its_uniqueness_in_one_query(client, monkeypatch):
    client.get("/v1/map")  # the first read fits a map this small
    service = client.app.state.runtime.service()
    calls = []
    original = service.uniqueness_of
    monkeypatch.setattr(service, "uniqueness_of", lambda md5s: calls.append(list(md5s)) or original(md5s))

    items = client.get("/v1/analyses", params={"limit": 50}).json()["items"]

    assert len(calls) == 1 and len(calls[0]) == len(items) == 7
    assert sum(item["uniqueness"] is None for item in items) == 1


def test_an_export_takes_the_uniqueness_sort(client):
    scores = {p["md5"]: p["uniqueness"] for p in client.get("/v1/map").json()["points"]}
    csv = client.get("/v1/analyses/export", params={"sort": "least_unique", "min_uniqueness": 0}).text
    exported = list(dict.fromkeys(line.split(",")[0] for line in csv.splitlines()[1:]))

    assert exported == sorted(scores, key=scores.__getitem__)
