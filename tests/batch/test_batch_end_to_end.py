"""Batch analysis end to end: a real two-node Ray cluster, real networks, real Postgres and SeaweedFS."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from skimage import data
from sqlalchemy import select, update

from picmetric_core.batch.jobs import HEARTBEAT_S, BatchOptions, Heartbeat, JobStore, sources_key
from picmetric_core.batch.runner import BatchSummary, run_batch
from picmetric_core.config import Settings
from picmetric_core.history import HistoryQuery
from picmetric_core.intake.images import NOT_AN_IMAGE_MESSAGE
from picmetric_core.service import PicMetricService
from picmetric_core.similar.variants import everything
from picmetric_core.store.database import create_database_engine, upgrade_schema
from picmetric_core.store.orm import AnalysisRow, BatchJobRow, utc_now
from tests.support.batch import empty_bucket, new_bucket, two_node_cluster, write_bad_files, write_variants
from tests.support.services import create_pg_database, drop_pg_database, make_settings, s3_settings

MAX_PIXELS = 300_000  # the photo variants are at most 320 x 320 px; the "poster" is over this
REPO = Path(__file__).resolve().parents[2]
OBJECT_NAMES = {"thumb.jpg", "analysis.json"}  # and the original; overlays are drawn when first asked for

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def cluster() -> str:
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-batch-", dir="/tmp"))  # short: Ray's socket paths must fit
    try:
        with two_node_cluster(temp_dir) as address:
            yield address
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def store_bucket(seaweed) -> str:
    client = seaweed.client()
    name = new_bucket(client)
    yield name
    empty_bucket(client, name)


@pytest.fixture(scope="module")
def settings(tmp_path_factory, seaweed, store_bucket, pg_server_url, empty_models_dir) -> Settings:
    name, url = create_pg_database(pg_server_url)
    yield s3_settings(
        tmp_path_factory.mktemp("batch-data"),
        seaweed,
        store_bucket,
        database_url=url,
        models_dir=empty_models_dir,
        max_image_pixels=MAX_PIXELS,
    )
    drop_pg_database(name)


@pytest.fixture(scope="module")
def engine(settings):
    engine = create_database_engine(settings)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """200 distinct photos, one byte-identical copy in a subfolder, and three bad files."""
    folder = tmp_path_factory.mktemp("archive")
    photos = write_variants(folder, 200, seed=1)
    (folder / "2026" / "copies").mkdir(parents=True)
    shutil.copyfile(next(iter(photos.values())), folder / "2026" / "copies" / "again.jpg")
    bad = write_bad_files(folder / "2026", MAX_PIXELS)
    return folder, photos, bad


@pytest.fixture(scope="module")
def first_run(cluster, settings, photo_folder) -> BatchSummary:
    folder, _, _ = photo_folder
    return run_batch(settings, [str(folder)], BatchOptions(actors=(2, 2), batch_size=8))


def stored_keys(seaweed, bucket: str) -> dict[str, set[str]]:
    """md5 → the names of the objects stored under it."""
    keys: dict[str, set[str]] = {}
    for page in seaweed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            md5, _, name = item["Key"].partition("/")
            keys.setdefault(md5, set()).add(name)
    return keys


def rows_for(engine, md5s) -> Counter:
    with engine.connect() as connection:
        found = connection.execute(select(AnalysisRow.md5).where(AnalysisRow.md5.in_(list(md5s)))).scalars()
        return Counter(found)


@pytest.mark.slow
def test_a_folder_is_stored_once_per_distinct_image_with_one_error_record_per_bad_file(
    first_run, photo_folder, engine, seaweed, store_bucket, settings
):
    _, photos, bad = photo_folder
    job = first_run.job
    assert job is not None and job.status == "done"
    assert (job.total, job.new, job.seen, job.failed) == (204, 200, 1, 3)  # the copy was "seen"

    rows = rows_for(engine, photos)
    assert set(rows) == set(photos) and set(rows.values()) == {1}
    objects = stored_keys(seaweed, store_bucket)
    for md5, path in photos.items():
        assert objects[md5] == OBJECT_NAMES | {f"original.{'png' if path.suffix == '.png' else 'jpg'}"}

    reasons = {Path(failure.item).name: failure.error for failure in first_run.failures}
    assert set(reasons) == {path.name for path in bad.values()}
    assert "damaged" in reasons["corrupt.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert "limit" in reasons["poster.png"]


@pytest.mark.slow
def test_the_networks_ran_on_both_nodes(first_run):
    assert first_run.inferred >= 200
    assert len(first_run.nodes) == 2


@pytest.mark.slow
def test_history_filters_by_batch(first_run, photo_folder, settings):
    service = PicMetricService(settings, analyzer=None)  # reads only
    try:
        page = service.history(HistoryQuery(batch=first_run.job.id, limit=200, with_total=True))
        # Batch-stored photos are indexed for "more like this" like uploads (the embedding crossed the stages).
        look_alikes = service.similar(page.items[0].record.md5, k=3)
    finally:
        service.close()
    assert page.total == 200
    assert {item.record.md5 for item in page.items} == set(photo_folder[1])
    assert look_alikes, "a batch-stored photo has no embedding"


@pytest.mark.slow
def test_a_second_run_over_the_same_folder_runs_no_inference(first_run, photo_folder, settings, engine):
    folder, photos, _ = photo_folder
    again = run_batch(settings, [str(folder)], BatchOptions(actors=(2, 2), batch_size=8))
    assert again.job.id != first_run.job.id  # the first job finished, so this is a new one
    assert again.inferred == 0
    assert (again.job.total, again.job.new, again.job.seen, again.job.failed) == (204, 0, 201, 3)
    assert set(rows_for(engine, photos).values()) == {1}


@pytest.mark.slow
def test_an_s3_prefix_is_analysed(cluster, settings, seaweed, engine, tmp_path):
    client = seaweed.client()
    source = new_bucket(client)
    try:
        inside = write_variants(tmp_path / "inside", 30, seed=2, prefix="shot")
        outside = write_variants(tmp_path / "outside", 3, seed=3, prefix="other")
        for path in inside.values():
            client.upload_file(str(path), source, f"products/2026/{path.name}")
        for path in outside.values():
            client.upload_file(str(path), source, f"elsewhere/{path.name}")
        client.put_object(Bucket=source, Key="products/2026/readme.txt", Body=b"not listed: not an image name")

        summary = run_batch(settings, [f"s3://{source}/products/"], BatchOptions(actors=(2, 2), batch_size=8))

        assert (summary.job.total, summary.job.new, summary.job.failed) == (30, 30, 0)
        assert set(rows_for(engine, inside).values()) == {1}
        assert not rows_for(engine, outside)
    finally:
        empty_bucket(client, source)


@pytest.mark.slow
def test_a_killed_driver_is_resumed_with_exact_totals(cluster, settings, engine, tmp_path):
    folder = tmp_path / "resume"
    photos = write_variants(folder, 48, seed=4, prefix="event")
    jobs = JobStore(engine)
    driver = subprocess.Popen(
        [sys.executable, "-m", "picmetric_core.cli", "batch", str(folder), "--address", cluster, "--batch-size", "4"],
        cwd=tmp_path,  # no .env here: the settings come from the environment below
        env=_driver_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    watcher = JobStore(engine, stale_after_s=3 * HEARTBEAT_S)  # a dead driver shows after three missed beats
    try:
        job = _wait_for_progress(watcher, str(folder), at_least=8, driver=driver)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    done_before_kill = len(jobs.done_items(job.id))
    assert done_before_kill < 48
    interrupted = _wait_for_status(watcher, job.id, "interrupted", timeout_s=3 * HEARTBEAT_S + 10)
    assert f"--resume {job.id}" in interrupted.error

    resumed = run_batch(settings, [str(folder)], BatchOptions(actors=(2, 2), batch_size=4))

    assert resumed.job.id == job.id
    assert (resumed.job.total, resumed.job.new, resumed.job.seen, resumed.job.failed) == (48, 48, 0, 0)
    assert resumed.ran <= 48 - done_before_kill
    items = jobs.items(job.id)
    assert len(items) == len({item.item for item in items}) == 48
    assert set(rows_for(engine, photos).values()) == {1} and len(rows_for(engine, photos)) == 48


@pytest.mark.slow
def test_the_command_shows_a_bar_and_a_summary_and_keeps_rays_log_lines_off_the_terminal(cluster, settings, tmp_path):
    folder = tmp_path / "cli"
    write_variants(folder, 3, seed=11, prefix="cli")
    (folder / "notes.jpg").write_bytes(b"shopping list: milk, eggs\n")

    command = [sys.executable, "-m", "picmetric_core.cli", "batch", str(folder), "--address", cluster]
    done = subprocess.run(command, cwd=tmp_path, env=_driver_env(settings), capture_output=True, text=True, timeout=300)

    assert done.returncode == 1  # one item failed
    summary = done.stdout.splitlines()
    # Variants of the test photos: some may be near-duplicates of ones other tests stored.
    assert re.fullmatch(r"job \d+: 4 items — new 3( \(\d near-duplicates?\))?, seen before 0, failed 1", summary[0])
    assert summary[2].startswith("  failed: ") and summary[2].endswith("notes.jpg: " + NOT_AN_IMAGE_MESSAGE)
    terminal = [line for line in re.split(r"[\r\n]", done.stderr) if line.strip()]
    assert terminal and all(line.startswith("batch: ") for line in terminal), done.stderr[-2000:]
    assert "4/4" in terminal[-1]


def _driver_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "DATABASE_URL": settings.database_url,
        "S3_BUCKET": settings.s3_bucket,
        "S3_KEY": settings.s3_key.get_secret_value(),
        "S3_SECRET": settings.s3_secret.get_secret_value(),
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "PICMETRIC_DATA_DIR": str(settings.data_dir),
        "PICMETRIC_MODELS_DIR": str(settings.models_dir),
        "PICMETRIC_MAX_PIXELS": str(settings.max_image_pixels),
    }


def _wait_for_progress(jobs: JobStore, source: str, at_least: int, driver: subprocess.Popen):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the driver exited before it could be killed"
        job = jobs.unfinished_for([source])
        if job is not None:
            assert job.status == "running", "a live driver's job read as interrupted"
            if job.done >= at_least:
                return job
        time.sleep(0.2)
    pytest.fail(f"the driver did not finish {at_least} items in time")


def _wait_for_status(jobs: JobStore, job_id: int, status: str, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while (job := jobs.get(job_id)).status != status:
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} is {job.status}, not {status}, after {timeout_s:.0f} s")
        time.sleep(0.5)
    return job


def test_a_job_reads_as_running_while_its_heartbeat_beats_and_interrupted_once_it_stops(tmp_path):
    engine = create_database_engine(make_settings(tmp_path))  # SQLite under tmp_path
    upgrade_schema(engine)
    jobs = JobStore(engine, stale_after_s=1.0)
    job = jobs.start(["/photos/event"], total=10)

    with Heartbeat(jobs, every_s=0.2) as heartbeat:
        heartbeat.add(job.id)
        time.sleep(1.6)
        assert jobs.get(job.id).status == "running"
    time.sleep(1.6)
    interrupted = jobs.get(job.id)
    assert interrupted.status == "interrupted"
    assert f"picmetric batch --resume {job.id}" in interrupted.error
    assert jobs.unfinished_for(["/photos/event"]).id == job.id  # the same sources again resume it

    jobs.reopen(job.id)
    assert jobs.get(job.id).status == "running"
    assert jobs.finish(job.id, "done", None).status == "done"
    time.sleep(1.2)
    assert jobs.get(job.id).status == "done"  # a finished job never reads as interrupted


@pytest.mark.slow
def test_near_duplicates_are_counted_in_the_jobs_summary(cluster, settings, engine, tmp_path):
    folder = tmp_path / "edits"
    folder.mkdir()
    coffee, rocket = data.coffee(), data.rocket()  # photos no other test here stores
    Image.fromarray(coffee).save(folder / "coffee.png")
    Image.fromarray(everything(coffee)).save(folder / "coffee-edited.jpg", quality=85)  # resized, cropped, recoloured
    Image.fromarray(rocket).save(folder / "rocket.png")

    # One block of 4: the three are stored one after another, so the later of the two coffees sees the first.
    summary = run_batch(settings, [str(folder)], BatchOptions(batch_size=4))

    assert (summary.job.new, summary.job.near_duplicates) == (3, 1)
    assert JobStore(engine).get(summary.job.id).near_duplicates == 1


def test_sources_key_ignores_order():
    assert sources_key(["b", "a"]) == sources_key(["a", " b"])


def _wait_until_finished(read_job, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = read_job()
        if job["status"] != "running":
            return job
        time.sleep(0.5)
    pytest.fail("the batch job did not finish in time")


@pytest.mark.slow
def test_the_api_starts_a_job_on_an_allowed_folder_and_reports_it_to_the_end(cluster, settings, tmp_path):
    from fastapi.testclient import TestClient

    from picmetric_core.api import create_app

    allowed = tmp_path / "allowed"
    photos = write_variants(allowed / "drop", 6, seed=5, prefix="api")
    (allowed / "drop" / "notes.jpg").write_bytes(b"not a photo")
    app = create_app(settings.model_copy(update={"batch_allowed_sources": [str(allowed)]}))
    client = TestClient(app)  # no `with`: the app's model warm-up is not needed for batch jobs

    refused = client.post("/v1/batches", json={"sources": ["/etc"]})
    assert refused.status_code == 403
    assert "PICMETRIC_BATCH_ALLOWED_SOURCES" in refused.json()["error"] and str(allowed) not in refused.text
    outside = client.post("/v1/batches", json={"sources": [f"{allowed}/../.."]})
    assert outside.status_code == 403

    started = client.post("/v1/batches", json={"sources": [str(allowed / "drop")]})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    job = _wait_until_finished(lambda: client.get(f"/v1/batches/{job_id}").json())

    assert (job["status"], job["total"], job["new"], job["failed"]) == ("done", 7, 6, 1)
    assert job["failures"] == [{"item": "notes.jpg", "error": NOT_AN_IMAGE_MESSAGE}]
    assert job_id in [item["id"] for item in client.get("/v1/batches").json()["items"]]
    listed = client.get("/v1/analyses", params={"batch": job_id, "limit": 50}).json()["items"]
    assert {item["md5"] for item in listed} == set(photos)
    app.state.runtime.close()


@pytest.mark.slow
def test_the_batches_page_starts_a_job_and_shows_it_finished(cluster, settings, engine, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from picmetric_core.config import get_settings

    allowed = tmp_path / "shared"
    write_variants(allowed / "event", 5, seed=6, prefix="page")
    for name, value in _driver_env(settings).items():
        if name != "PYTHONPATH":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PICMETRIC_BATCH_ALLOWED_SOURCES", str(allowed))
    get_settings.cache_clear()
    try:
        # Opened from the main script, as a browser would: the sidebar's page links resolve against it.
        at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
        at.switch_page("pages/2_Batches.py")
        at.run()
        at.text_input(key="source").set_value(str(allowed / "event"))
        at.button[0].click().run()
        assert not at.exception and not at.error
        deadline = time.monotonic() + 300
        while "done" not in at.subheader[0].value and time.monotonic() < deadline:
            time.sleep(1)
            at.run()
        assert at.subheader[0].value.endswith("· done")
        assert [metric.value for metric in at.metric[:3]] == ["5", "0", "0"]

        # A job whose driver died long ago: the page says so, and finishes it with one click.
        write_variants(allowed / "stale", 2, seed=7, prefix="stale")
        stale = JobStore(engine).start([str(allowed / "stale")], total=2)
        an_hour_ago = utc_now() - timedelta(hours=1)
        with engine.begin() as connection:
            connection.execute(update(BatchJobRow).where(BatchJobRow.id == stale.id).values(heartbeat_at=an_hour_ago))
        at.run()
        at.button(key=f"job-{stale.id}").click().run()
        assert at.subheader[0].value.endswith("· interrupted")
        assert "stopped before it finished" in at.warning[0].value
        at.button(key=f"finish-{stale.id}").click().run()
        deadline = time.monotonic() + 300
        while "done" not in at.subheader[0].value and time.monotonic() < deadline:
            time.sleep(1)
            at.run()
        assert at.subheader[0].value == f"Job {stale.id} · done"
        assert [metric.value for metric in at.metric[:3]] == ["2", "0", "0"]
    finally:
        get_settings.cache_clear()


@pytest.mark.slow
def test_a_list_file_names_paths_and_urls_and_urls_keep_the_fetch_rules(cluster, settings, tmp_path):
    photos = write_variants(tmp_path / "listed", 3, seed=8, prefix="listed")
    listing = tmp_path / "to-analyse.txt"
    lines = ["# exported from the archive", *(f"listed/{path.name}" for path in photos.values()), ""]
    listing.write_text("\n".join([*lines, "http://127.0.0.1:9/inside.jpg", "http://[::1]/loopback.png"]))

    summary = run_batch(settings, [str(listing)], BatchOptions(batch_size=4))

    assert (summary.job.total, summary.job.new, summary.job.failed) == (5, 3, 2)
    assert all(failure.error.startswith("Refused:") for failure in summary.failures)


def test_only_sources_inside_the_allowed_places_may_be_named(tmp_path):
    from picmetric_core.batch.sources import SourceNotAllowed, check_allowed

    allowed = [str(tmp_path / "photos"), "s3://archive/2026"]
    (tmp_path / "photos" / "event").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "photos" / "escape").symlink_to(tmp_path / "elsewhere")
    check_allowed([str(tmp_path / "photos" / "event"), "s3://archive/2026/05/", "s3://archive/2026"], allowed)
    for refused in (
        str(tmp_path / "elsewhere"),
        str(tmp_path / "photos" / "escape"),  # a link out of the folder
        f"{tmp_path}/photos/../elsewhere",
        f"{tmp_path}/photos/*",  # globs are refused: they could climb out
        "s3://archive/20260",
        "s3://archive/2026/../private",
        "s3://other/2026",
        "https://example.com/list.txt",
    ):
        with pytest.raises(SourceNotAllowed):
            check_allowed([refused], allowed)


def test_a_list_file_in_an_allowed_folder_cannot_name_files_outside_it(settings, tmp_path):
    from fastapi.testclient import TestClient

    from picmetric_core.api import create_app

    allowed = tmp_path / "allowed"
    outside = write_variants(tmp_path / "private", 1, seed=9, prefix="private")
    allowed.mkdir()
    (allowed / "list.txt").write_text("\n".join(str(path) for path in outside.values()))
    app = create_app(settings.model_copy(update={"batch_allowed_sources": [str(allowed)]}))

    refused = TestClient(app).post("/v1/batches", json={"sources": [str(allowed / "list.txt")]})

    assert refused.status_code == 403
    assert "outside the folders" in refused.json()["error"] and str(tmp_path) not in refused.text
