"""No request can stall the API, balloon its memory or read private data; nothing leaks.

Each test plays the hostile client or the failing infrastructure for real: local servers that
trickle bytes, a chunked upload on a raw socket, Postgres and SeaweedFS behind a TCP proxy that
goes silent. Where a test waits for something that used to hang, it waits in a thread with a
generous join limit: the outcome checked is that the request ends, with the right answer.
"""

from __future__ import annotations

import io
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from picmetric_core.api import create_app
from picmetric_core.errors import CorruptImage, DatabaseUnavailable, FetchFailed, StoreUnavailable
from picmetric_core.intake.fetch import fetch_url
from picmetric_core.intake.images import decode_image
from picmetric_core.intake.names import clean_filename
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.store.database import create_database_engine, database_errors, request_budget_s
from picmetric_core.store.objects import S3Store
from tests.support.api import HANG_LIMIT_S, TrickleServer, app_client, serving
from tests.support.services import make_settings, s3_settings
from tests.support.tcp_proxy import TcpProxy

TOKEN = "hardening-token-" + "y" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_BYTES = 1_000_000


def in_thread(call: Callable[[], Any], limit_s: float = HANG_LIMIT_S) -> Any:
    """``call()``'s result (or its exception, raised here); fails the test if it is still running after ``limit_s``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"still waiting after {limit_s} s: it hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def assert_plain_error(response, status: int, *words: str, secrets: tuple[str, ...] = ()) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for word in words:
        assert word.lower() in message.lower(), message
    for secret in secrets:
        assert secret not in response.text, f"{secret!r} leaked: {response.text}"
    assert "Traceback" not in response.text


# --- 1. URL fetches: one deadline, a cap on how many at once ------------------------------------


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer()
    yield server
    server.close()


def test_header_bytes_trickling_in_cannot_outlast_the_fetch_deadline(trickle):
    settings = make_settings(Path("/nonexistent"), allow_private_urls=True, url_connect_timeout_s=0.5,
                             url_read_timeout_s=1.0)
    with pytest.raises(FetchFailed, match=r"Timed out after 1\.5 s"):
        in_thread(lambda: fetch_url(trickle.url(), settings))


def test_a_name_lookup_that_never_answers_ends_at_the_fetch_deadline():
    answer = threading.Event()

    def silent_dns(host: str, port: int) -> list[str]:  # plays a DNS server that answers only when told
        answer.wait(HANG_LIMIT_S)
        return ["93.184.216.34"]

    settings = make_settings(Path("/nonexistent"), url_connect_timeout_s=0.5, url_read_timeout_s=1.0)
    try:
        with pytest.raises(FetchFailed, match=r"looking up photos\.example"):
            in_thread(lambda: fetch_url("http://photos.example/a.jpg", settings, resolve=silent_dns))
    finally:
        answer.set()


def test_url_fetches_over_the_cap_are_refused_while_everything_else_answers(tmp_path, trickle):
    settings = make_settings(tmp_path, allow_private_urls=True, url_max_concurrent=2, url_read_timeout_s=30.0)
    with app_client(settings) as client:
        held = [threading.Thread(target=client.post, args=("/v1/analyses",), kwargs={"data": {"url": trickle.url()}})
                for _ in range(2)]
        for thread in held:
            thread.start()
        slots = client.app.state.runtime.fetch_slots
        waited = time.monotonic()
        while slots.in_use < 2 and time.monotonic() - waited < HANG_LIMIT_S:
            time.sleep(0.05)
        refused = client.post("/v1/analyses", data={"url": trickle.url()})
        assert_plain_error(refused, 503, "try again")
        assert refused.headers["retry-after"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/analyses").status_code == 200
        assert trickle.connections == 2  # the refused fetch never reached the server
        trickle.stop.set()  # the held fetches fail now and give their slots back
        for thread in held:
            thread.join(HANG_LIMIT_S)
    assert slots.in_use == 0


# --- 2. Chunked uploads: counted as they arrive; the token before any of the body -----------------


def chunked_upload(port: int, headers: str, most_bytes: int) -> tuple[int, int]:
    """POST a multipart upload without Content-Length, chunk by chunk until the server answers.

    Returns:
        The response status and how many body bytes were sent before it came.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_LIMIT_S) as sock:
        sock.sendall(
            b"POST /v1/analyses HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=XyZ\r\n" + headers.encode() + b"\r\n"
        )
        part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n\xff\xd8\xff'
        sent = 0
        chunk = part + bytes(64 * 1024 - len(part))
        while sent < most_bytes and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                break  # the server stopped reading: its answer is waiting
            sent += len(chunk)
            chunk = bytes(64 * 1024)
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1]), sent


def test_a_chunked_upload_is_stopped_at_the_limit_not_read_to_the_end(tmp_path):
    with serving(make_settings(tmp_path, max_image_bytes=MAX_BYTES)) as port:
        status, sent = in_thread(lambda: chunked_upload(port, "", most_bytes=200 * MAX_BYTES))
    assert status == 413
    # The kernel's socket buffers take a few MB before the server reads a byte; the body is 200 MB.
    assert sent < 20 * MAX_BYTES, f"{sent:,} bytes were sent before the refusal"
    assert not list((tmp_path / "store").rglob("*.*"))


def test_a_chunked_upload_without_the_token_is_refused_before_its_body(tmp_path):
    with serving(make_settings(tmp_path, max_image_bytes=MAX_BYTES, api_token=TOKEN)) as port:
        status, sent = in_thread(lambda: chunked_upload(port, "", most_bytes=200 * MAX_BYTES))
        authorised, _ = in_thread(lambda: chunked_upload(port, f"Authorization: Bearer {TOKEN}\r\n", 3 * MAX_BYTES))
    assert status == 401
    assert sent < 20 * MAX_BYTES
    assert authorised == 413


# --- 5. The token guards reads too --------------------------------------------------------------


def test_with_a_token_every_route_but_healthz_and_the_docs_needs_it(tmp_path):
    md5 = "0" * 32
    with app_client(make_settings(tmp_path, api_token=TOKEN)) as client:
        for path in ("/v1/analyses", f"/v1/analyses/{md5}", f"/objects/{md5}/original.jpg", "/do_data_science_url"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = client.get(path, headers=headers)
                assert_plain_error(response, 401, "bearer token")
                assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/analyses", headers=AUTH).json()["items"] == []
        assert client.get(f"/v1/analyses/{md5}", headers=AUTH).status_code == 404
        assert client.get(f"/objects/{md5}/original.jpg", headers=AUTH).status_code == 404
        assert client.get("/healthz").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        schema = client.get("/openapi.json").json()
    assert schema["paths"]["/v1/analyses"]["get"].get("security"), "the schema says reads need the token"
    assert not schema["paths"]["/healthz"]["get"].get("security")


# --- 4. A JPEG cut short and closed with an end-of-image marker -----------------------------------


def test_a_jpeg_cut_short_with_an_end_marker_appended_is_refused(tmp_path, dog_jpg):
    cut = dog_jpg[: len(dog_jpg) // 2] + b"\xff\xd9"
    with pytest.raises(CorruptImage, match="damaged or incomplete"):
        decode_image(cut, max_bytes=MAX_BYTES, max_pixels=50_000_000)
    progressive = io.BytesIO()
    Image.open(io.BytesIO(dog_jpg)).save(progressive, format="JPEG", progressive=True)
    with pytest.raises(CorruptImage):
        decode_image(progressive.getvalue()[:-4000] + b"\xff\xd9", max_bytes=MAX_BYTES, max_pixels=50_000_000)
    assert decode_image(progressive.getvalue(), max_bytes=MAX_BYTES, max_pixels=50_000_000).width == 768
    with app_client(make_settings(tmp_path)) as client:
        response = client.post("/v1/analyses", files={"file": ("cut.jpg", cut, "image/jpeg")})
    assert_plain_error(response, 400, "damaged")


# --- 6. A silent database, a full pool ----------------------------------------------------------


def test_a_silent_database_answers_503_and_recovers_when_it_speaks_again(tmp_path, pg_url):
    address = urlsplit(pg_url)
    with TcpProxy((address.hostname, address.port)) as proxy:
        proxied = pg_url.replace(f"{address.hostname}:{address.port}", f"127.0.0.1:{proxy.port}")
        settings = make_settings(tmp_path, database_url=proxied, db_statement_timeout_s=1.0, db_connect_timeout_s=1)
        with app_client(settings) as client:
            assert client.get("/v1/analyses").status_code == 200
            proxy.black_hole()
            silent = in_thread(lambda: client.get("/v1/analyses"))
            assert_plain_error(silent, 503, "database", secrets=(str(proxy.port), "postgres", "picmetric_test"))
            assert silent.headers["retry-after"]
            proxy.restore()
            assert client.get("/v1/analyses").status_code == 200


def test_concurrent_reads_of_a_silent_database_each_answer_within_one_budget(tmp_path, pg_url):
    """Reads queued behind the pool and a dead pooled connection still answer within the documented bound."""
    address = urlsplit(pg_url)
    with TcpProxy((address.hostname, address.port)) as proxy:
        proxied = pg_url.replace(f"{address.hostname}:{address.port}", f"127.0.0.1:{proxy.port}")
        settings = make_settings(tmp_path, database_url=proxied, db_statement_timeout_s=1.0, db_connect_timeout_s=1)
        bound_s = request_budget_s(settings)
        with app_client(settings) as client:
            assert client.get("/v1/analyses").status_code == 200  # the pool now holds a live connection
            proxy.black_hole()

            def timed_read() -> tuple[int, float]:
                started = time.monotonic()
                status = client.get("/v1/analyses").status_code
                return status, time.monotonic() - started

            with ThreadPoolExecutor(max_workers=10) as pool:
                answers = in_thread(lambda: list(pool.map(lambda _: timed_read(), range(10))))
            proxy.restore()
    assert [status for status, _ in answers] == [503] * 10
    slowest = max(seconds for _, seconds in answers)
    assert slowest <= bound_s + 1.0, f"slowest read answered after {slowest:.1f} s; the bound is {bound_s:.1f} s"


def test_a_full_connection_pool_is_a_database_error_not_a_crash(tmp_path, pg_url):
    engine = create_database_engine(make_settings(tmp_path, database_url=pg_url, db_pool_timeout_s=0.2))
    held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
    try:
        with pytest.raises(DatabaseUnavailable, match="busy"), database_errors(engine), engine.connect():
            pass
    finally:
        for connection in held:
            connection.close()
        engine.dispose()


# --- 7. A silent object store ---------------------------------------------------------------------


def test_a_silent_store_gives_up_within_its_budget_and_works_again_after(tmp_path, seaweed, bucket):
    endpoint = urlsplit(seaweed.endpoint_url)
    with TcpProxy((endpoint.hostname, endpoint.port)) as proxy:
        settings = s3_settings(tmp_path, seaweed, bucket, s3_endpoint_url=f"http://127.0.0.1:{proxy.port}",
                               store_budget_s=1.5)
        store = S3Store.from_settings(settings)
        store.put("a/one.png", b"first", "image/png")
        proxy.black_hole()
        with pytest.raises(StoreUnavailable, match="not reachable"):
            in_thread(lambda: store.put("a/two.png", b"second", "image/png"), limit_s=20)
        proxy.cut()
        with pytest.raises(StoreUnavailable):
            in_thread(lambda: store.get("a/one.png"), limit_s=20)
        proxy.restore()
        assert store.get("a/one.png") == b"first"


# --- 8. No infrastructure details in what a client sees -------------------------------------------


def test_database_and_store_failures_name_no_infrastructure(tmp_path, dog_jpg):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    files = {"file": ("dog.jpg", dog_jpg, "image/jpeg")}
    no_database = make_settings(tmp_path / "db", database_url=f"postgresql://dbuser_x@127.0.0.1:{port}/secret_db",
                                db_connect_timeout_s=1)
    with app_client(no_database) as client:
        for response in (client.get("/v1/analyses"), client.post("/v1/analyses", files=files)):
            assert_plain_error(response, 503, "database", secrets=("dbuser_x", "secret_db", str(port), "127.0.0.1"))
    no_store = make_settings(tmp_path / "s3", s3_bucket="private-bucket-x", s3_key="k", s3_secret="s",
                             s3_endpoint_url=f"http://127.0.0.1:{port}", store_budget_s=1.0)
    with app_client(no_store) as client:
        response = client.post("/v1/analyses", files=files)
    assert_plain_error(response, 503, "store", secrets=("private-bucket-x", str(port), "127.0.0.1", "S3_"))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the store's folder should be")
    with app_client(make_settings(tmp_path / "local", store_dir=blocked)) as client:
        response = client.post("/v1/analyses", files=files)
    assert_plain_error(response, 503, "store", secrets=(str(tmp_path), "not-a-folder"))


class _DatabaseGoneMidway:
    """Raises what SQLAlchemy raises when a connection drops outside any database_errors() block.

    Stands in for a code path we cannot make Postgres reach on demand; the real drops are above.
    """

    models = ()
    load_seconds: dict = {}  # noqa: RUF012

    def analyze(self, image, on_stage=None):
        from sqlalchemy.exc import OperationalError

        raise OperationalError("SELECT 1", {}, Exception("server at 10.9.8.7:6543 closed the connection"))


def test_a_database_error_escaping_every_translation_is_still_a_plain_503(tmp_path, dog_jpg):
    with app_client(make_settings(tmp_path), _DatabaseGoneMidway()) as client:
        response = client.post("/v1/analyses", files={"file": ("dog.jpg", dog_jpg, "image/jpeg")})
    assert_plain_error(response, 503, "database", secrets=("10.9.8.7", "6543", "SELECT"))


def test_networks_that_fail_to_load_are_reported_without_paths(tmp_path, dog_jpg):
    from picmetric_core.errors import WeightsError

    def missing(_settings):
        raise WeightsError(f"{tmp_path}/models/yolov3.weights is truncated")

    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, loader=ModelLoader(settings, load=missing))) as client:
        response = client.post("/v1/analyses", files={"file": ("d.jpg", dog_jpg, "image/jpeg")})
        health = client.get("/healthz").json()
    assert_plain_error(response, 503, "yolov3.weights is truncated", secrets=(str(tmp_path),))
    assert health["networks"]["error"] == "yolov3.weights is truncated"


@pytest.mark.slow
def test_healthz_names_the_models_that_run_without_the_models_folder(tmp_path, analyzer, empty_models_dir):
    """/healthz is open even with a token: nothing in it may say where files lie on the server."""
    settings = make_settings(tmp_path, models_dir=empty_models_dir, api_token=TOKEN)
    with app_client(settings, analyzer) as client:
        client.app.state.runtime.loader.analyzer(wait_s=60)
        health = client.get("/healthz")
    assert health.status_code == 200
    models = health.json()["networks"]["models"]
    assert any("weights fetch" in model.get("note", "") for model in models)  # still says what to do
    for secret in (str(empty_models_dir), str(tmp_path), "/tmp/"):
        assert secret not in health.text, f"{secret!r} is in /healthz: {health.text}"


# --- 8 and 9, through the real networks into Postgres ----------------------------------------------


def multipart_with_raw_filename(filename: bytes, data: bytes) -> tuple[bytes, str]:
    """A multipart body whose file name is sent byte for byte (httpx would percent-escape a NUL)."""
    body = (
        b'--RawName\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n--RawName--\r\n"
    )
    return body, "multipart/form-data; boundary=RawName"


@pytest.mark.slow
def test_control_characters_in_a_file_name_are_removed_and_weights_named_by_checksum(
    tmp_path, fresh_pg_url, analyzer, dog_jpg
):
    settings = make_settings(tmp_path, database_url=fresh_pg_url)
    body, content_type = multipart_with_raw_filename(b"dog\x00\x1b[31m\x07.jpg", dog_jpg)
    with app_client(settings, analyzer) as client:
        created = client.post("/v1/analyses", content=body, headers={"Content-Type": content_type})
        assert created.status_code == 201, created.text
        listed = client.get("/v1/analyses").json()["items"]
        health = client.get("/healthz").json()
    assert created.json()["record"]["filename"] == "dog[31m.jpg"
    assert [item["record"]["filename"] for item in listed] == ["dog[31m.jpg"]
    for models in (created.json()["models"], health["networks"]["models"]):
        assert {model["role"] for model in models} == {"classifier", "detector", "faces"}
        for model in models:
            assert "/" not in model["weights"], model
            assert "sha256:" in model["weights"] or model["weights"] == "mtcnn package", model


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("holiday.jpg", "holiday.jpg"),
        ("a\x00b\r\nc.png", "abc.png"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("/etc/passwd", "passwd"),
        ("photo\u202egpj.exe", "photogpj.exe"),
        ("\x00\x01\x02", None),
        ("x" * 400 + ".jpg", "x" * 255),
    ],
)
def test_file_names_are_cleaned(given, kept):
    assert clean_filename(given) == kept


# --- 3. Small files that decode to huge images --------------------------------------------------


def test_a_small_file_of_a_huge_image_reaches_the_networks_bounded(tmp_path):
    huge = Image.new("RGB", (7000, 5000), (200, 30, 30))
    for image_format in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        huge.save(buffer, format=image_format)
        image = decode_image(buffer.getvalue(), max_bytes=MAX_BYTES, max_pixels=50_000_000, max_side=2048)
        assert image.rgb.shape == (1463, 2048, 3), image_format
        assert (image.width, image.height) == (7000, 5000)
        assert image.data == buffer.getvalue()  # the original bytes are what is stored


@pytest.mark.slow
def test_boxes_found_on_the_bounded_copy_are_in_the_original_pixels(analyzer, dog_jpg):
    from picmetric_core.filters import shown
    from picmetric_core.overlays import render_overlays

    as_sent = decode_image(dog_jpg, max_bytes=MAX_BYTES * 20, max_pixels=50_000_000)
    four_times = io.BytesIO()
    Image.open(io.BytesIO(dog_jpg)).resize((768 * 4, 576 * 4), Image.Resampling.BICUBIC).save(four_times, "PNG")
    large = decode_image(four_times.getvalue(), max_bytes=MAX_BYTES * 20, max_pixels=50_000_000, max_side=768)
    assert large.rgb.shape == as_sent.rgb.shape and (large.width, large.height) == (768 * 4, 576 * 4)

    small_analysis, large_analysis = analyzer.analyze(as_sent), analyzer.analyze(large)
    assert (large_analysis.width, large_analysis.height) == (3072, 2304)

    def best_dog(analysis):
        return max((d for d in shown(analysis).detections if d.label == "dog"), key=lambda d: d.score).box

    small_dog, large_dog = best_dog(small_analysis), best_dog(large_analysis)
    assert large_dog.x2 > 768  # in the original's pixels, not the copy's
    scaled_back = type(large_dog)(*(value / 4 for value in large_dog.as_list()))
    assert scaled_back.iou(small_dog) > 0.8
    overlays = render_overlays(large, large_analysis)
    assert Image.open(io.BytesIO(overlays.detections_png)).size == (768, 576)
