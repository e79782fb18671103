"""The service end to end: real photos, the real networks, SeaweedFS with signature checks, Postgres."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.exc import OperationalError

from picmetric_core.errors import DatabaseUnavailable, StoreUnavailable
from picmetric_core.history import HistoryQuery
from picmetric_core.intake.images import DecodedImage, decode_image
from picmetric_core.results import Analysis
from picmetric_core.service import PicMetricService
from picmetric_core.store.objects import ObjectKeys, RetryPolicy, S3Store, analysis_key
from picmetric_core.store.orm import AnalysisRow, DetectionRow, FaceRow
from tests.support.services import drop_pg_database, make_settings, s3_settings


class CountingAnalyzer:
    """The real analyzer, counting how often the networks run."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    def analyze(self, image: DecodedImage, on_stage=None) -> Analysis:
        with self._lock:
            self.calls += 1
        return self.inner.analyze(image, on_stage=on_stage)


class RecordingStore:
    """A store that remembers which keys were written."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.puts.append(key)
        self.inner.put(key, data, content_type)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture
def counting(analyzer) -> CountingAnalyzer:
    return CountingAnalyzer(analyzer)


@pytest.fixture(scope="module")
def dog(limits, dog_jpg) -> DecodedImage:
    return decode_image(dog_jpg, **limits)


@pytest.fixture(scope="module")
def astronaut(limits, astronaut_png) -> DecodedImage:
    return decode_image(astronaut_png, **limits)


@pytest.fixture
def s3_service(tmp_path, seaweed, bucket, fresh_pg_url, counting):
    service = PicMetricService(s3_settings(tmp_path, seaweed, bucket, database_url=fresh_pg_url), counting)
    yield service
    service.close()


def rows_in(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as connection:
        counts = {
            table.__tablename__: connection.scalar(select(func.count()).select_from(table))
            for table in (AnalysisRow, DetectionRow, FaceRow)
        }
    engine.dispose()
    return counts


@pytest.mark.slow
def test_round_trip_through_s3_and_postgres(s3_service, seaweed, bucket, fresh_pg_url, counting, dog):
    submission = s3_service.submit(dog, filename="dog.jpg")

    assert not submission.seen_before and counting.calls == 1
    analysis = submission.analysis
    assert "dog" in {d.label for d in analysis.detections if d.score >= 0.25}

    # Objects: in the bucket, each with its own Content-Type.
    client = seaweed.client()
    keys = ObjectKeys.for_image(dog.md5, "image/jpeg")
    assert submission.record.keys == keys
    expected_types = {
        keys.original: "image/jpeg",
        keys.thumbnail: "image/jpeg",
        analysis_key(dog.md5): "application/json",
    }
    for key, content_type in expected_types.items():
        assert client.head_object(Bucket=bucket, Key=key)["ContentType"] == content_type, key
    assert not s3_service.store.exists(keys.detections) and not s3_service.store.exists(keys.faces)  # not drawn
    thumbnail = Image.open(io.BytesIO(client.get_object(Bucket=bucket, Key=keys.thumbnail)["Body"].read()))
    assert max(thumbnail.size) == 320

    # Rows: in Postgres, one per image and one per detection.
    assert rows_in(fresh_pg_url) == {"analyses": 1, "detections": len(analysis.detections), "faces": 0}

    # History: found by a detector label and by the classifier's best label, with its links.
    page = s3_service.history(HistoryQuery(label="dog", label_kind="detector"))
    assert [item.record.md5 for item in page.items] == [dog.md5]
    top_class = analysis.classifications[0]
    by_class = s3_service.history(HistoryQuery(label=top_class.label, min_score=top_class.score))
    assert [item.analysis for item in by_class.items] == [analysis]

    # Links: a presigned URL gives back the very bytes; a tampered one is refused by the server.
    url = page.items[0].urls.original
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content == dog.data
    assert response.headers["Content-Type"] == "image/jpeg"
    for tampered in (url.replace("original.jpg", "faces.png"), url.replace("X-Amz-Expires=", "X-Amz-Expires=9")):
        assert requests.get(tampered, timeout=10).status_code == 403
    # An overlay's link opens once it is drawn: handing the links out draws what is missing first.
    assert requests.get(page.items[0].urls.detections, timeout=10).status_code == 404
    item = s3_service.with_overlays_stored(page.items[0])
    overlay = requests.get(item.urls.detections, timeout=10)
    assert overlay.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(overlay.content)).size == (dog.width, dog.height)
    assert client.head_object(Bucket=bucket, Key=keys.faces)["ContentType"] == "image/png"

    # Seen before: answered from the database, with no upload and no network.
    again = s3_service.get(dog.md5)
    assert again is not None and again.analysis == analysis and again.seen_before
    recording = RecordingStore(s3_service.store)
    s3_service.store = recording
    assert s3_service.submit(dog).seen_before
    assert counting.calls == 1 and recording.puts == []


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_same_photo_from_eight_threads_is_analysed_once(backend, request, tmp_path, counting, dog):
    if backend == "sqlite":
        settings = make_settings(tmp_path)  # the embedded defaults: SQLite and a local folder
    else:
        seaweed, bucket = request.getfixturevalue("seaweed"), request.getfixturevalue("bucket")
        settings = s3_settings(tmp_path, seaweed, bucket, database_url=request.getfixturevalue("fresh_pg_url"))
    service = PicMetricService(settings, counting)
    start = threading.Barrier(8)

    def submit(_):
        start.wait()
        return service.submit(dog, filename="dog.jpg")

    with ThreadPoolExecutor(8) as pool:
        submissions = list(pool.map(submit, range(8)))

    assert counting.calls == 1
    assert sum(not s.seen_before for s in submissions) == 1
    assert {s.record.md5 for s in submissions} == {dog.md5}
    assert all(s.analysis == submissions[0].analysis for s in submissions)
    assert service.history(HistoryQuery(with_total=True)).total == 1
    service.close()


def _stand_in_analysis(image: DecodedImage) -> Analysis:
    return Analysis(image.md5, image.width, image.height, (), (), (), ())


class StandIn:
    def analyze(self, image: DecodedImage, on_stage=None) -> Analysis:
        return _stand_in_analysis(image)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_processes_racing_on_one_image_store_one_row(backend, request, tmp_path, dog):
    """Separate services share nothing but the database and store, as two server processes would: the
    image's lock holds across processes (store/locks.py), so the second finds the first one's row."""
    url = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    settings = make_settings(tmp_path, database_url=url)
    barrier = threading.Barrier(2)
    counting = CountingAnalyzer(StandIn())
    services = [PicMetricService(settings, counting) for _ in range(2)]

    def submit(service: PicMetricService):
        barrier.wait(timeout=30)  # both past the first md5 check at about the same moment
        return service.submit(dog)

    with ThreadPoolExecutor(2) as pool:
        submissions = list(pool.map(submit, services))
    assert sorted(s.seen_before for s in submissions) == [False, True]
    assert counting.calls == 1  # the networks ran once, for both processes
    assert submissions[0].record == submissions[1].record
    assert services[0].history(HistoryQuery(with_total=True)).total == 1
    for service in services:
        service.close()


@pytest.mark.slow
def test_store_down_saves_nothing_and_says_so(tmp_path, fresh_pg_url, counting, dog):
    settings = make_settings(
        tmp_path,
        database_url=fresh_pg_url,
        s3_bucket="picmetric",
        s3_key="AKIDEXAMPLE",
        s3_secret="s3cr3t-value",
        s3_endpoint_url="http://127.0.0.1:9",  # nothing listens on the discard port
    )
    store = S3Store.from_settings(settings, retry=RetryPolicy(attempts=2, base_delay_s=0.05))
    service = PicMetricService(settings, counting, store=store)
    with pytest.raises(StoreUnavailable) as caught:
        service.submit(dog)
    message = str(caught.value)
    assert "not reachable" in message and "not saved" in message and "s3cr3t-value" not in message
    assert counting.calls == 0  # the outage showed before the networks ran
    assert rows_in(fresh_pg_url)["analyses"] == 0
    service.close()


@pytest.mark.slow
def test_database_failure_after_upload_is_retried_without_running_again(
    tmp_path, seaweed, bucket, fresh_pg_url, counting, astronaut
):
    service = PicMetricService(s3_settings(tmp_path, seaweed, bucket, database_url=fresh_pg_url), counting)
    recording = RecordingStore(service.store)
    service.store = recording

    def connection_lost(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO ANALYSES"):
            raise OperationalError(statement, parameters, Exception("server closed the connection unexpectedly"))

    event.listen(service.engine, "before_cursor_execute", connection_lost)
    with pytest.raises(DatabaseUnavailable, match="try again"):
        service.submit(astronaut, filename="astronaut.png")
    event.remove(service.engine, "before_cursor_execute", connection_lost)

    assert rows_in(fresh_pg_url)["analyses"] == 0
    written = list(recording.puts)
    assert analysis_key(astronaut.md5) in written and counting.calls == 1

    retried = service.submit(astronaut, filename="astronaut.png")
    assert not retried.seen_before
    assert counting.calls == 1 and recording.puts == written  # reused: no network, no upload
    assert len(retried.analysis.faces) >= 1
    # The reused analysis kept its embedding: "more like this" works for it without a backfill.
    assert service.similar(astronaut.md5) is not None
    assert rows_in(fresh_pg_url) == {
        "analyses": 1,
        "detections": len(retried.analysis.detections),
        "faces": len(retried.analysis.faces),
    }
    stored = service.get(astronaut.md5)
    assert stored is not None and stored.analysis == retried.analysis
    assert requests.get(service.overlay_link(astronaut.md5, "faces"), timeout=10).status_code == 200
    service.close()


def test_local_store_service_reads_objects_by_key(tmp_path, dog):
    service = PicMetricService(make_settings(tmp_path), StandIn())
    submission = service.submit(dog, source="url", source_url="https://example.com/dog.jpg")
    assert submission.urls.original is None
    assert service.store.get(submission.record.keys.original) == dog.data
    assert submission.record.source == "url" and submission.record.source_url == "https://example.com/dog.jpg"
    assert (tmp_path / "picmetric.db").is_file()
    with pytest.raises(ValueError):
        service.submit(dog, source="email")
    service.close()


def test_database_down_fails_before_any_work(tmp_path, fresh_pg_url, dog):
    class MustNotRun:
        def analyze(self, image, on_stage=None):
            pytest.fail("the networks ran although the database was down")

    service = PicMetricService(make_settings(tmp_path, database_url=fresh_pg_url), MustNotRun())
    recording = RecordingStore(service.store)
    service.store = recording
    database = fresh_pg_url.rsplit("/", 1)[1]
    drop_pg_database(database)  # the server loses the database under us

    with pytest.raises(DatabaseUnavailable, match="DATABASE_URL") as caught:
        service.submit(dog)
    assert recording.puts == []
    assert database in str(caught.value)
    with pytest.raises(DatabaseUnavailable):
        service.history(HistoryQuery())
    service.close()


@pytest.mark.slow
def test_submit_reports_each_step_as_it_starts_and_each_network_as_it_finishes(tmp_path, analyzer, dog):
    service = PicMetricService(make_settings(tmp_path), analyzer)
    steps: list[str] = []
    service.submit(dog, on_stage=steps.append)
    networks = ["classifier", "detector", "faces"]
    if analyzer.parallel:  # the networks run at once: they finish in whichever order they finish
        assert steps[:4] == ["storing", *networks]
        assert sorted(steps[4:7]) == sorted(f"{network} done" for network in networks)
    else:  # one after another (under OpenVINO): each starts once the one before is done
        assert steps[:7] == ["storing", *[step for network in networks for step in (network, f"{network} done")]]
    assert steps[7:] == ["saving"]  # no overlay is drawn: they are drawn when first asked for
    steps.clear()
    assert service.submit(dog, on_stage=steps.append).seen_before
    assert steps == []  # seen before: nothing runs
