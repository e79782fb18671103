"""Deleting what was stored: one photo, a filter, by age; on real Postgres (pgvector) and SeaweedFS.

After a delete no object in the bucket and no row in any table names the photo, and no door shows it; a
store that fails midway leaves objects that a later run removes; an upload racing a delete of the same
photo ends with a complete analysis or nothing; another process's similarity index forgets the photo.
Most tests use a stand-in for the networks (an analysis with one class, one object, one face and a small
embedding); one runs the real networks end to end.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine, create_engine, inspect, text, update

from picmetric_core import cli
from picmetric_core.api.app import create_app
from picmetric_core.batch.jobs import ItemRecord, JobStore
from picmetric_core.config import Settings, get_settings
from picmetric_core.history import HistoryQuery
from picmetric_core.intake.images import DecodedImage, decode_image
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.results import Analysis, Box, Classification, Detection, Face, ModelInfo, Point
from picmetric_core.service import PicMetricService
from picmetric_core.similar.signature import signature_of
from picmetric_core.store.deletions import object_keys
from picmetric_core.store.objects import ObjectKeys, ObjectNotFound
from picmetric_core.store.orm import AnalysisRow
from tests.support.photos import LIMITS
from tests.support.photos import skimage_photo as photo
from tests.support.services import make_settings, s3_settings
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "delete-token-" + "x" * 20
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class StandIn:
    """No network: one class, one object and one face, and a small embedding (the photo at 16×16 in grey)."""

    models = (ModelInfo("classifier", "stand-in", "none", False),)
    load_seconds: dict = {}  # noqa: RUF012

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def analyze(self, image: DecodedImage, on_stage=None) -> Analysis:
        if self.delay_s:
            time.sleep(random.uniform(0, self.delay_s))
        grey = np.asarray(Image.fromarray(image.rgb).convert("L").resize((16, 16)), np.float32).ravel()
        face = Face(0.99, Box(10, 10, 40, 50), {name: Point(20, 20) for name in LANDMARKS})
        return Analysis(
            image.md5,
            image.width,
            image.height,
            (Classification("tabby", 281, 0.9),),
            (Detection("cat", 15, 0.8, Box(1, 2, 30, 40)),),
            (face,),
            self.models,
            signature=signature_of(image.rgb, grey - grey.mean(), "stand-in"),
        )


@pytest.fixture(scope="module")
def photos() -> dict[str, DecodedImage]:
    return {name: photo(name) for name in ("chelsea", "coffee", "camera", "astronaut", "rocket", "coins")}


def app_client(settings: Settings, analyzer=None) -> TestClient:
    loader = ModelLoader(settings, load=lambda _settings: analyzer or StandIn())
    return TestClient(create_app(settings, loader=loader), raise_server_exceptions=False)


def upload(client: TestClient, image: DecodedImage, name: str, **headers: str) -> str:
    response = client.post("/v1/analyses", files={"file": (name, image.data, image.content_type)}, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()["md5"]


def bucket_keys(seaweed, bucket: str) -> list[str]:
    pages = seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def rows_naming(engine: Engine, md5: str) -> dict[str, int]:
    """Rows of every table whose text (every column, JSON included) contains ``md5``."""
    found = {}
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            found[table] = connection.scalar(
                text(f'SELECT count(*) FROM "{table}" AS t WHERE t::text LIKE :pattern'), {"pattern": f"%{md5}%"}
            )
    return {table: n for table, n in found.items() if n}


def rows_of(engine: Engine, table: str, column: str, ids: list[int]) -> int:
    with engine.connect() as connection:
        return connection.scalar(text(f"SELECT count(*) FROM {table} WHERE {column} = ANY(:ids)"), {"ids": ids})


def children_of(engine: Engine, md5: str) -> dict[str, list[int]]:
    """The ids of an analysis's rows in each child table (and of its signature's vector)."""
    with engine.connect() as connection:
        analysis_id = connection.scalar(text("SELECT id FROM analyses WHERE md5 = :md5"), {"md5": md5})
        ids = {"analyses": [analysis_id]}
        for table in ("classifications", "detections", "faces", "signatures"):
            ids[table] = list(
                connection.scalars(text(f"SELECT id FROM {table} WHERE analysis_id = :id"), {"id": analysis_id})
            )
        ids["signature_vectors"] = list(
            connection.scalars(
                text("SELECT signature_id FROM signature_vectors WHERE signature_id = ANY(:ids)"),
                {"ids": ids["signatures"]},
            )
        )
    return ids


def record_batch_item(engine: Engine, md5: str) -> int:
    jobs = JobStore(engine)
    job = jobs.start(["/photos"], total=1)
    jobs.record(job.id, [ItemRecord(item="/photos/cat.png", md5=md5, status="new")])
    jobs.finish(job.id, "done", 1.0)
    return job.id


@pytest.fixture
def pg_engine(fresh_pg_url):
    engine = create_engine(fresh_pg_url)
    yield engine
    engine.dispose()


def assert_gone(client: TestClient, engine: Engine, seaweed, bucket: str, md5: str, before: dict[str, list[int]]):
    """Nothing names ``md5``: no object, no row, no door."""
    assert [key for key in bucket_keys(seaweed, bucket) if md5 in key] == []
    assert rows_naming(engine, md5) == {}
    for table, ids in before.items():
        column = "signature_id" if table == "signature_vectors" else "id"
        assert rows_of(engine, table, column, ids) == 0, table
    assert client.get(f"/v1/analyses/{md5}").status_code == 404
    for kind in ("original", "detections", "faces", "thumbnail"):
        assert client.get(f"/v1/analyses/{md5}/{kind}", follow_redirects=False).status_code == 404
    assert client.get(f"/v1/analyses/{md5}/similar").status_code == 404
    assert md5 not in client.get("/v1/analyses", params={"limit": 200}).text
    assert md5 not in client.get("/v1/analyses/export", params={"format": "csv"}).text
    assert md5 not in client.get("/v1/analyses/export", params={"format": "coco"}).text
    assert client.delete(f"/v1/analyses/{md5}").status_code == 404


# --- One photo, end to end ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_photo_analysed_by_the_networks_and_deleted_leaves_nothing_anywhere(
    tmp_path, seaweed, bucket, fresh_pg_url, pg_engine, analyzer, astronaut_png, dog_jpg
):
    settings = s3_settings(tmp_path, seaweed, bucket, database_url=fresh_pg_url)
    with app_client(settings, analyzer) as client:
        astronaut = client.post("/v1/analyses", files={"file": ("astronaut.png", astronaut_png, "image/png")})
        dog = upload(client, decode_image(dog_jpg, **LIMITS), "dog.jpg")
        md5 = astronaut.json()["md5"]
        assert astronaut.json()["faces"] and client.app.state.runtime.service().similarity_backend == "pgvector"
        assert [item["md5"] for item in client.get(f"/v1/analyses/{dog}/similar").json()["items"]] == [md5]
        record_batch_item(pg_engine, md5)
        before = children_of(pg_engine, md5)
        assert all(before.values()), before  # classes, objects, faces, signature and vector all there
        assert len([key for key in bucket_keys(seaweed, bucket) if md5 in key]) == 3  # no overlay drawn yet
        for kind in ("detections", "faces"):  # drawn on the first ask, and kept
            redirect = client.get(f"/v1/analyses/{md5}/{kind}", follow_redirects=False)
            assert requests.get(redirect.headers["location"], timeout=10).headers["content-type"] == "image/png"
        assert len([key for key in bucket_keys(seaweed, bucket) if md5 in key]) == 5

        assert client.delete(f"/v1/analyses/{md5}").status_code == 204

        assert_gone(client, pg_engine, seaweed, bucket, md5, before)
        assert client.get(f"/v1/analyses/{dog}/similar").json()["items"] == []
        assert client.get("/v1/analyses", params={"similar_to": dog}).json()["items"] == []
        assert client.get(f"/v1/analyses/{dog}").status_code == 200  # the other photo is untouched
        assert len([key for key in bucket_keys(seaweed, bucket) if dog in key]) == 3


def test_a_deleted_photo_leaves_no_row_object_or_link_and_can_be_stored_again(
    tmp_path, seaweed, bucket, fresh_pg_url, pg_engine, photos
):
    settings = s3_settings(tmp_path, seaweed, bucket, database_url=fresh_pg_url)
    with app_client(settings) as client:
        cat = upload(client, photos["chelsea"], "chelsea.png")
        coffee = upload(client, photos["coffee"], "coffee.png")
        job = record_batch_item(pg_engine, cat)
        before = children_of(pg_engine, cat)
        assert all(before.values()), before
        assert set(rows_naming(pg_engine, cat)) == {"analyses", "batch_items"}  # the check sees them

        assert client.delete(f"/v1/analyses/{cat.upper()}").status_code == 204

        assert_gone(client, pg_engine, seaweed, bucket, cat, before)
        assert client.get(f"/v1/batches/{job}").json()["new"] == 1  # the job's counts are kept, unlinked
        assert client.get("/v1/analyses", params={"batch": job}).json()["items"] == []
        assert [item["md5"] for item in client.get("/v1/analyses").json()["items"]] == [coffee]
        # Stored again later: a new, complete analysis.
        assert client.post("/v1/analyses", files={"file": ("again.png", photos["chelsea"].data)}).status_code == 201
        assert len([key for key in bucket_keys(seaweed, bucket) if cat in key]) == 3
        assert client.get(f"/v1/analyses/{cat}/original", follow_redirects=False).status_code == 307


def test_the_local_folder_store_keeps_no_file_or_folder_of_a_deleted_photo(tmp_path, photos):
    settings = make_settings(tmp_path)
    with app_client(settings) as client:
        md5 = upload(client, photos["coins"], "coins.png")
        keys = ObjectKeys.for_image(md5, "image/png")
        for key in (keys.thumbnail, keys.detections, keys.faces):  # the overlays drawn on this first ask
            assert client.get(f"/objects/{key}").status_code == 200
        assert (tmp_path / "store" / keys.faces).is_file()
        assert client.delete(f"/v1/analyses/{md5}").status_code == 204
        for key in (keys.thumbnail, keys.detections, keys.faces):
            assert client.get(f"/objects/{key}").status_code == 404
    assert not (tmp_path / "store" / md5).exists()


# --- By a filter ----------------------------------------------------------------------------------


def test_a_bulk_delete_by_filter_removes_exactly_the_matching_analyses(
    tmp_path, seaweed, bucket, fresh_pg_url, pg_engine, photos
):
    settings = s3_settings(tmp_path, seaweed, bucket, database_url=fresh_pg_url)
    names = {
        "chelsea": "cat-indoors.png", "coffee": "coffee.png", "camera": "cat-camera.png",
        "astronaut": "astronaut.png", "rocket": "rocket.png", "coins": "coins.png",
    }  # fmt: skip
    with app_client(settings) as client:
        md5 = {name: upload(client, photos[name], file) for name, file in names.items()}
        old = [md5["rocket"], md5["coins"]]
        with pg_engine.begin() as connection:
            connection.execute(
                update(AnalysisRow).where(AnalysisRow.md5.in_(old)).values(created_at=datetime.now(UTC) - timedelta(40))
            )
        everything = set(bucket_keys(seaweed, bucket))

        bodies = ({}, {"filenme": "cat"}, {"min_faces": -1})
        refused = [client.post("/v1/analyses/delete", json=body) for body in bodies]
        assert [r.status_code for r in refused] == [422, 422, 422]
        assert "all" in refused[0].json()["error"]
        dry = client.post("/v1/analyses/delete", json={"filename": "cat-", "dry_run": True}).json()
        cats = {"deleted": 2, "md5s": [md5["chelsea"], md5["camera"]], "pending_objects": 0, "video_ids": []}
        assert dry == cats | {"dry_run": True}
        assert set(bucket_keys(seaweed, bucket)) == everything

        done = client.post("/v1/analyses/delete", json={"filename": "cat-"}).json()
        assert done == cats | {"dry_run": False}
        until = (datetime.now(UTC) - timedelta(days=30)).isoformat()
        assert client.post("/v1/analyses/delete", json={"until": until}).json()["md5s"] == old

        left = {md5["coffee"], md5["astronaut"]}
        assert {item["md5"] for item in client.get("/v1/analyses").json()["items"]} == left
        assert {key.split("/")[0] for key in bucket_keys(seaweed, bucket)} == left
        assert client.post("/v1/analyses/delete", json={"all": True}).json()["deleted"] == 2
        assert bucket_keys(seaweed, bucket) == []
        with pg_engine.connect() as connection:
            for table in ("analyses", "classifications", "detections", "faces", "signatures", "signature_vectors"):
                assert connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
            assert connection.scalar(text("SELECT count(*) FROM deletions WHERE md5 IS NOT NULL")) == 0


def test_deleting_needs_the_token_and_browsers_may_ask_for_it(tmp_path, photos):
    origin = "http://app.example.test"
    settings = make_settings(tmp_path, api_token=TOKEN, cors_origins=[origin])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with app_client(settings) as client:
        md5 = upload(client, photos["coins"], "coins.png", **auth)
        assert client.delete(f"/v1/analyses/{md5}").status_code == 401
        assert client.post("/v1/analyses/delete", json={"all": True}).status_code == 401
        assert client.get(f"/v1/analyses/{md5}", headers=auth).status_code == 200
        preflight = client.options(
            f"/v1/analyses/{md5}", headers={"Origin": origin, "Access-Control-Request-Method": "DELETE"}
        )
        assert preflight.status_code == 200 and "DELETE" in preflight.headers["access-control-allow-methods"]
        assert client.delete(f"/v1/analyses/{md5}", headers=auth).status_code == 204


# --- Failures -------------------------------------------------------------------------------------


def test_a_store_cut_midway_leaves_objects_pending_that_a_later_run_or_upload_removes(
    tmp_path, seaweed, bucket, fresh_pg_url, pg_engine, photos, monkeypatch
):
    endpoint = urlsplit(seaweed.endpoint_url)
    with TcpProxy((endpoint.hostname, endpoint.port)) as proxy:
        settings = s3_settings(
            tmp_path, seaweed, bucket, database_url=fresh_pg_url,
            s3_endpoint_url=f"http://127.0.0.1:{proxy.port}", store_budget_s=1.5,
        )  # fmt: skip
        with app_client(settings) as client:
            cat, coffee, camera = (upload(client, photos[n], f"{n}.png") for n in ("chelsea", "coffee", "camera"))
            for kind in ("detections", "faces"):  # drawn, so that every kind of object is left pending
                assert client.get(f"/v1/analyses/{cat}/{kind}", follow_redirects=False).status_code == 307
            service = client.app.state.runtime.service()
            real_delete_many = service.store.delete_many

            def cut_midway(keys):  # the rows are gone by now: the store goes away before the objects do
                proxy.cut()
                return real_delete_many(keys)

            monkeypatch.setattr(service.store, "delete_many", cut_midway)
            assert client.delete(f"/v1/analyses/{cat}").status_code == 204
            monkeypatch.setattr(service.store, "delete_many", real_delete_many)

            # The row is gone, so nothing shows it; its objects are still there, listed as pending.
            assert client.get(f"/v1/analyses/{cat}").status_code == 404
            assert client.get(f"/v1/analyses/{cat}/original", follow_redirects=False).status_code == 404
            pending = service.pending_deletes()
            assert [item.md5 for item in pending] == [cat]
            assert sorted(pending[0].keys) == sorted(key for key in bucket_keys(seaweed, bucket) if cat in key)
            assert len(pending[0].keys) == 5

            # While the store is down, the next delete answers 503 and deletes nothing.
            down = client.delete(f"/v1/analyses/{coffee}")
            assert down.status_code == 503 and "store" in down.json()["error"]
            assert client.get(f"/v1/analyses/{coffee}").status_code == 200
            assert [item.md5 for item in service.pending_deletes()] == [cat]

            # Back again: `picmetric delete --retry-pending` removes what was left.
            proxy.restore()
            for name, value in {
                "PICMETRIC_DATA_DIR": str(tmp_path), "DATABASE_URL": fresh_pg_url, "S3_BUCKET": bucket,
                "S3_KEY": seaweed.access_key, "S3_SECRET": seaweed.secret_key,
                "S3_ENDPOINT_URL": settings.s3_endpoint_url,
            }.items():  # fmt: skip
                monkeypatch.setenv(name, value)
            get_settings.cache_clear()
            try:
                assert cli.main(["delete", "--retry-pending"]) == 0
            finally:
                get_settings.cache_clear()
            assert [key for key in bucket_keys(seaweed, bucket) if cat in key] == []
            assert service.pending_deletes() == () and rows_naming(pg_engine, cat) == {}

            # Cut again while deleting the camera photo, then upload it again: the upload removes what the
            # delete left first (it must not reuse those objects as "an earlier try"), then stores anew.
            monkeypatch.setattr(service.store, "delete_many", cut_midway)
            assert client.delete(f"/v1/analyses/{camera}").status_code == 204
            monkeypatch.setattr(service.store, "delete_many", real_delete_many)
            proxy.restore()
            removed: list[str] = []
            monkeypatch.setattr(
                service.store, "delete_many", lambda keys: removed.extend(keys) or real_delete_many(keys)
            )
            again = client.post("/v1/analyses", files={"file": ("camera.png", photos["camera"].data)})
            assert again.status_code == 201 and not again.json()["seen_before"]
            assert sorted(removed) == sorted(object_keys(camera, ObjectKeys.for_image(camera, "image/png")))
            assert len([key for key in bucket_keys(seaweed, bucket) if camera in key]) == 3
            assert service.pending_deletes() == ()


def test_a_database_or_store_that_is_down_answers_503_and_nothing_changes(
    tmp_path, seaweed, bucket, pg_server_url, fresh_pg_url, pg_engine, photos
):
    database, store = urlsplit(fresh_pg_url), urlsplit(seaweed.endpoint_url)
    with (
        TcpProxy((database.hostname, database.port)) as db_proxy,
        TcpProxy((store.hostname, store.port)) as store_proxy,
    ):
        settings = s3_settings(
            tmp_path, seaweed, bucket, s3_endpoint_url=f"http://127.0.0.1:{store_proxy.port}", store_budget_s=1.5,
            database_url=fresh_pg_url.replace(f"{database.hostname}:{database.port}", f"127.0.0.1:{db_proxy.port}"),
            db_statement_timeout_s=1.0, db_connect_timeout_s=1,
        )  # fmt: skip
        with app_client(settings) as client:
            md5 = upload(client, photos["rocket"], "rocket.png")
            objects = bucket_keys(seaweed, bucket)
            for proxy, word in ((db_proxy, "database"), (store_proxy, "store")):
                proxy.cut()
                for response in (
                    client.delete(f"/v1/analyses/{md5}"),
                    client.post("/v1/analyses/delete", json={"filename": "rocket"}),
                ):
                    assert response.status_code == 503 and word in response.json()["error"], response.text
                    assert response.headers["retry-after"]
                proxy.restore()
                assert client.get(f"/v1/analyses/{md5}").status_code == 200
                assert bucket_keys(seaweed, bucket) == objects
                assert client.app.state.runtime.service().pending_deletes() == ()


# --- The race -------------------------------------------------------------------------------------


class SlowDeletes:
    """The store, with each delete a little late: an upload can arrive while a delete is between its row and
    its objects."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def delete_many(self, keys):
        time.sleep(random.uniform(0, 0.03))
        return self.inner.delete_many(keys)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def state_of(service: PicMetricService, image: DecodedImage) -> str:
    """"complete": the row and every object an analysis writes (its overlays, once drawn, too); "nothing"."""
    keys = object_keys(image.md5, ObjectKeys.for_image(image.md5, image.content_type))
    written = [key for key in keys if not key.endswith(("/detections.png", "/faces.png"))]
    there = [key for key in keys if service.store.exists(key)]
    stored, pending = service.is_stored(image.md5), service.pending_deletes()
    if stored and set(written) <= set(there) and not pending:
        return "complete"
    if not stored and not there and not pending:
        return "nothing"
    return f"half: row {stored}, objects {there}, pending {pending}"


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_an_upload_racing_a_delete_of_the_same_photo_ends_complete_or_with_nothing(
    backend, request, tmp_path, photos
):
    """Two services (two processes' worth: their own connections and thread locks), 30 rounds each way;
    a third asks for an overlay meanwhile (drawn on demand, it must never outlive a delete)."""
    if backend == "postgres":
        seaweed, bucket = request.getfixturevalue("seaweed"), request.getfixturevalue("bucket")
        settings = s3_settings(tmp_path, seaweed, bucket, database_url=request.getfixturevalue("fresh_pg_url"))
    else:
        settings = make_settings(tmp_path)
    uploader = PicMetricService(settings, StandIn(delay_s=0.02))
    deleter = PicMetricService(settings, StandIn())
    drawer = PicMetricService(settings, StandIn())
    deleter.store = SlowDeletes(deleter.store)
    image = photos["astronaut"]
    outcomes: Counter[str] = Counter()

    def draw() -> None:
        with contextlib.suppress(ObjectNotFound):  # not stored at that moment
            drawer.overlay(image.md5, random.choice(("detections", "faces")))

    try:
        for round_ in range(60):
            if round_ % 2:  # half the rounds start with the photo stored
                uploader.submit(image)
            start = threading.Barrier(3)

            def together(call, start=start) -> None:
                start.wait()
                time.sleep(random.uniform(0, 0.03))
                call()

            with ThreadPoolExecutor(3) as pool:
                calls = (lambda: uploader.submit(image), lambda: deleter.delete([image.md5]), draw)
                for future in [pool.submit(together, call) for call in calls]:
                    future.result()
            state = state_of(deleter, image)
            assert state in ("complete", "nothing"), f"round {round_}: {state}"
            outcomes[state] += 1
            deleter.delete([image.md5])
            assert state_of(deleter, image) == "nothing"
    finally:
        uploader.close()
        deleter.close()
        drawer.close()
    assert outcomes["complete"] and outcomes["nothing"], outcomes


# --- Every process's similarity index -------------------------------------------------------------


@pytest.mark.parametrize("index", ["memory", "auto"])
def test_another_process_forgets_a_deleted_photo_without_a_restart(index, tmp_path, fresh_pg_url, photos):
    settings = make_settings(tmp_path, database_url=fresh_pg_url, similar_index=index)
    writer = PicMetricService(settings, StandIn())
    reader = PicMetricService(settings, StandIn())
    assert reader.similarity_backend == ("pgvector" if index == "auto" else "memory")
    small_cat = photo("chelsea", 0.6)
    for name in ("chelsea", "coffee", "camera", "rocket"):
        writer.submit(photos[name])
    cat, coffee = photos["chelsea"].md5, photos["coffee"].md5
    # The reader has loaded its index before the delete.
    assert cat in [p.submission.record.md5 for p in reader.similar(coffee) or []]
    assert [d.md5 for d in reader.submit(small_cat).near_duplicates] == [cat]

    result = writer.delete([cat])

    assert result.deleted == (cat,) and result.pending == ()
    assert cat not in [p.submission.record.md5 for p in reader.similar(coffee) or []]
    assert [d.md5 for d in reader.near_duplicates(small_cat.md5) or []] == []
    assert reader.similar(cat) is None and reader.near_duplicates(cat) is None
    assert sorted(reader._similarity._md5s) == sorted(  # what the index holds is exactly what is stored
        [photos[name].md5 for name in ("coffee", "camera", "rocket")] + [small_cat.md5]
    )
    # Stored again, it is found again.
    writer.submit(photos["chelsea"])
    assert [d.md5 for d in reader.near_duplicates(small_cat.md5) or []] == [cat]
    writer.close()
    reader.close()


# --- The command ----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """``picmetric`` reads its settings from the environment: SQLite and a local folder under ``tmp_path``."""
    monkeypatch.setenv("PICMETRIC_DATA_DIR", str(tmp_path))
    for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR", "PICMETRIC_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_command_deletes_by_md5_filter_and_age_and_a_dry_run_deletes_nothing(cli_env, photos, capsys):
    service = PicMetricService(make_settings(cli_env), StandIn())
    md5 = {name: service.submit(photos[name], filename=f"{name}.png").record.md5 for name in photos}
    with service._sessions.begin() as session:
        session.execute(
            update(AnalysisRow)
            .where(AnalysisRow.md5.in_([md5["rocket"], md5["coins"]]))
            .values(created_at=datetime.now(UTC) - timedelta(days=40))
        )

    def run(*args: str) -> tuple[int, str, str]:
        status = cli.main(["delete", *args])
        out = capsys.readouterr()
        return status, out.out, out.err

    def stored() -> set[str]:
        return {item.record.md5 for item in service.history(HistoryQuery(limit=200)).items}

    assert run()[0] == 2  # nothing selected: nothing deleted
    assert run("--older-than", "30d", "--until", "2026-01-01")[0] == 2
    assert run(md5["coffee"], "--all")[0] == 2
    status, out, _ = run("--filename", "co", "--dry-run")
    assert status == 0 and "would delete 2 analyses" in out
    assert out.split()[:2] == [md5["coins"], md5["coffee"]]  # oldest first
    assert stored() == set(md5.values())

    status, out, _ = run("--older-than", "30d")
    assert status == 0 and out.split()[:2] == [md5["rocket"], md5["coins"]] and "deleted 2 analyses" in out
    assert run("--retention") == (0, "PICMETRIC_RETENTION_DAYS is not set: nothing is deleted.\n", "")
    status, out, err = run(md5["coffee"], "0" * 32)
    assert status == 1 and out.split()[0] == md5["coffee"] and "no analysis of " + "0" * 32 in err
    assert run("not-an-md5")[0] == 2
    assert stored() == {md5[name] for name in ("chelsea", "camera", "astronaut")}
    service.close()


def test_retention_deletes_what_is_older_than_the_setting(cli_env, photos, capsys, monkeypatch):
    service = PicMetricService(make_settings(cli_env), StandIn())
    old, new = (service.submit(photos[name]).record.md5 for name in ("coins", "coffee"))
    with service._sessions.begin() as session:
        session.execute(
            update(AnalysisRow).where(AnalysisRow.md5 == old).values(created_at=datetime.now(UTC) - timedelta(days=8))
        )
    monkeypatch.setenv("PICMETRIC_RETENTION_DAYS", "7")
    get_settings.cache_clear()
    assert cli.main(["delete", "--retention", "--dry-run"]) == 0
    assert cli.main(["delete", "--retention"]) == 0
    out = capsys.readouterr().out
    assert out.count(old) == 2 and new not in out
    assert service.get(old) is None and service.get(new) is not None
    assert not (cli_env / "store" / old).exists()
    service.close()


# --- The History page -----------------------------------------------------------------------------


@pytest.fixture
def history_app(cli_env, photos, monkeypatch):
    """The History page on SQLite and a folder with three stored photos; its networks never load."""
    from streamlit.testing.v1 import AppTest

    from picmetric_ui import resources

    monkeypatch.setattr(resources, "warmup", lambda: resources.runtime().loader)
    seeder = PicMetricService(make_settings(cli_env), StandIn())
    md5 = {name: seeder.submit(photos[name], filename=f"{name}.png").record.md5 for name in ("chelsea", "coffee")}
    md5["camera"] = seeder.submit(photos["camera"], filename="camera.png").record.md5
    seeder.close()

    def run(**query: str) -> AppTest:
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
        at.switch_page("pages/1_History.py")
        for name, value in query.items():
            at.query_params[name] = value
        return at.run()

    yield run, md5
    resources.runtime().close()


def test_history_deletes_from_the_detail_view_after_saying_what_goes(history_app):
    from picmetric_ui import resources

    run, md5 = history_app
    at = run(md5=md5["chelsea"])
    assert not at.exception
    at.button(key="delete-detail").click().run()
    said = "\n".join(str(m.value) for m in at.markdown)
    assert "Deleting this photo removes from the store and the database" in said
    assert "the original photo and its thumbnail" in said and "the 1 face located" in said
    at.button(key="delete-confirm").click().run()
    assert not at.exception
    assert "Deleted chelsea.png" in "\n".join(str(s.value) for s in at.success)
    assert "2 analyses" in "\n".join(str(c.value) for c in at.caption)
    assert resources.service().get(md5["chelsea"]) is None


def test_history_deletes_the_compare_picks(history_app):
    from picmetric_ui import resources

    run, md5 = history_app
    at = run()
    for name in ("coffee", "camera"):
        at.checkbox(key=f"compare-{md5[name]}").check().run()
    at.button(key="delete-picked").click().run()
    assert "Deleting these 2 photos" in "\n".join(str(m.value) for m in at.markdown)
    at.button(key="delete-confirm").click().run()
    assert not at.exception
    assert "Deleted 2 photos" in "\n".join(str(s.value) for s in at.success)
    assert "1 analyses" in "\n".join(str(c.value) for c in at.caption)
    assert [item.record.md5 for item in resources.service().history(HistoryQuery()).items] == [md5["chelsea"]]


def test_every_deleted_key_is_one_the_store_holds_for_an_image():
    keys = object_keys("a" * 32, ObjectKeys.for_image("a" * 32, "image/jpeg"))
    assert keys[0] == "a" * 32 + "/analysis.json"  # first: "complete, reuse me" goes before anything else
    assert sorted(key.split("/")[1] for key in keys) == [
        "analysis.json", "detections.png", "faces.png", "original.jpg", "thumb.jpg",
    ]  # fmt: skip


def test_a_store_error_on_some_keys_keeps_exactly_those_pending(tmp_path, photos):
    service = PicMetricService(make_settings(tmp_path), StandIn())
    md5 = service.submit(photos["coins"]).record.md5
    real = service.store.delete_many

    def refuse_the_original(keys):
        return [key for key in keys if "original" in key] + real([key for key in keys if "original" not in key])

    service.store.delete_many = refuse_the_original
    result = service.delete([md5])
    assert result.deleted == (md5,) and [p.keys for p in result.pending] == [(f"{md5}/original.png",)]
    service.store.delete_many = real
    assert service.retry_deletes() == ()
    assert not (tmp_path / "store" / md5).exists()
    with pytest.raises(ValueError):
        service.delete(["not an md5"])
    service.close()

