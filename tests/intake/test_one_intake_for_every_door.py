"""One intake for every door: the one URL rule, the one file-name rule, fetch slots wherever a person fetches.

The cases come from the four places that used to have their own rules: the API (name from the final
URL's path), the Analyze page (its own split, the URL itself when nameless), the CLI (anything with
``://`` was a URL) and batch items (``?`` cut from every item, paths and S3 keys too).
"""

from __future__ import annotations

import doctest
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest

from picmetric_core.batch.sources import item_filename, read_item
from picmetric_core.cli import read_input
from picmetric_core.errors import NotAnImage, ServerBusy
from picmetric_core.intake import Upload, incoming, intake, is_url, source_filename, url_filename
from picmetric_core.intake.fetch import FetchSlots
from tests.support.api import HANG_LIMIT_S, TrickleServer
from tests.support.photos import png_bytes
from tests.support.services import make_settings
from tests.support.web import local_web_server

PHOTO = png_bytes(np.full((24, 32, 3), 200, np.uint8))


def test_the_docstring_examples_run():
    result = doctest.testmod(incoming, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("https://example.com/dog.jpg", True),
        ("http://example.com/dog.jpg", True),
        ("HTTPS://EXAMPLE.COM/DOG.JPG", True),  # batch lists said "a path" (and found no such file)
        ("  https://example.com/dog.jpg", True),
        ("s3://archive/2026/dog.jpg", False),
        ("ftp://example.com/dog.jpg", False),  # the CLI said "a URL" (and fetch refused it)
        ("/srv/photos/http://dog.jpg", False),  # the CLI said "a URL": a path with "://" in it
        ("C:\\photos\\dog.jpg", False),
        ("dog.jpg", False),
    ],
)
def test_one_rule_says_what_is_a_url(text, url):
    assert is_url(text) is url


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://example.com/photos/dog.jpg", "dog.jpg"),
        ("https://example.com/photos/dog.jpg?size=large&v=2", "dog.jpg"),
        ("https://example.com/photos/dog.jpg#top", "dog.jpg"),  # the page and batch kept "dog.jpg#top"
        ("https://example.com/photos/my%20dog.jpg", "my dog.jpg"),  # the API and the page kept "my%20dog.jpg"
        ("https://example.com/albums/summer/", "summer"),  # the page stored the whole URL
        ("https://example.com/a%2F..%2Fetc%2Fpasswd", "passwd"),  # no folders, even encoded
        ("https://example.com/%E2%80%AEgpj.png%00", "gpj.png"),  # no bidi overrides or NULs
        ("https://example.com/", None),  # the page stored the URL itself as the name
        ("https://example.com", None),  # the page and batch named it "example.com"
        ("https://example.com/?id=7", None),
    ],
)
def test_a_url_is_named_by_the_last_segment_of_its_path(url, name):
    assert url_filename(url) == name
    assert source_filename(url) == name


@pytest.mark.parametrize(
    ("item", "name"),
    [
        ("/srv/photos/2026/dog.jpg", "dog.jpg"),
        ("/srv/photos/what?.jpg", "what?.jpg"),  # batch cut paths at "?" too ("what")
        ("s3://archive/2026/cat.png", "cat.png"),
        ("s3://archive/2026/cat?v=1.png", "cat?v=1.png"),  # an S3 key may hold "?"
        ("https://example.com/a/b.jpg?x=1", "b.jpg"),
        ("https://example.com/", "https://example.com/"),  # job views show a nameless URL as it is
    ],
)
def test_a_batch_item_is_named_by_the_same_rule(item, name):
    assert item_filename(item) == name


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("dog.jpg", "dog.jpg"),
        ("C:\\Users\\me\\holiday.png", "holiday.png"),
        ("../../etc/passwd", "passwd"),
        ("dog\x00\x1b[31m.jpg", "dog[31m.jpg"),
        ("  spaced   out .png ", "spaced out .png"),
        ("", None),
        (None, None),
    ],
)
def test_an_upload_keeps_its_name_cleaned(tmp_path, given, name):
    incoming_image = intake(Upload(PHOTO, given), make_settings(tmp_path))
    assert (incoming_image.filename, incoming_image.source, incoming_image.source_url) == (name, "upload", None)
    assert incoming_image.image.format == "PNG" and incoming_image.image.rgb.shape == (24, 32, 3)


def test_an_upload_that_is_not_an_image_is_refused(tmp_path):
    with pytest.raises(NotAnImage):
        intake(Upload(b"hello", "notes.jpg"), make_settings(tmp_path))


class _Photos(BaseHTTPRequestHandler):
    """``/go`` redirects to ``/photos/my%20dog.png``, which is a PNG; nothing else exists."""

    def do_GET(self) -> None:
        if self.path == "/go?from=short":
            self.send_response(302)
            self.send_header("Location", "/photos/my%20dog.png?size=full")
            self.end_headers()
        elif self.path == "/photos/my%20dog.png?size=full":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PHOTO)))
            self.end_headers()
            self.wfile.write(PHOTO)
        else:
            self.send_error(404)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def photo_server() -> Iterator[str]:
    with local_web_server(_Photos) as url:
        yield url


def test_a_url_is_named_after_its_redirects_and_kept_as_given(tmp_path, photo_server):
    settings = make_settings(tmp_path, allow_private_urls=True)
    given = f"{photo_server}/go?from=short"
    slots = FetchSlots(1)
    fetched = intake(given, settings, fetch_slots=slots)
    assert (fetched.filename, fetched.source, fetched.source_url) == ("my dog.png", "url", given)
    assert fetched.image.data == PHOTO and slots.in_use == 0  # the slot is given back


def test_every_door_names_a_url_alike(tmp_path, photo_server):
    """The CLI's inputs and the batch's items go through the same intake as the API and the page."""
    settings = make_settings(tmp_path, allow_private_urls=True)
    given = f"{photo_server}/go?from=short"
    assert read_input(given, settings).filename == "my dog.png"
    received = read_item(given, settings)
    assert (received.filename, received.data) == ("my dog.png", PHOTO)

    local = tmp_path / "C? holiday.png"
    local.write_bytes(PHOTO)
    assert read_input(str(local), settings).filename == "C? holiday.png"
    assert read_item(str(local), settings).filename == "C? holiday.png"


def test_a_url_over_the_fetch_cap_is_refused_before_it_is_fetched(tmp_path, photo_server):
    settings = make_settings(tmp_path, allow_private_urls=True)
    slots = FetchSlots(1)
    with slots.slot(), pytest.raises(ServerBusy, match="try again"):
        intake(f"{photo_server}/go?from=short", settings, fetch_slots=slots)


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer()
    yield server
    server.close()


@pytest.fixture
def app_settings(tmp_path, monkeypatch):
    """The Analyze page's settings (from the environment): one URL fetch at a time."""
    from picmetric_core.config import get_settings

    monkeypatch.setenv("PICMETRIC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PICMETRIC_ALLOW_PRIVATE_URLS", "true")
    monkeypatch.setenv("PICMETRIC_URL_MAX_CONCURRENT", "1")
    monkeypatch.setenv("PICMETRIC_URL_READ_TIMEOUT", "30")
    for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_the_analyze_page_keeps_to_the_fetch_cap_like_the_api(app_settings, trickle):
    from picmetric_ui import intake as page_intake
    from picmetric_ui import resources

    slots = resources.runtime().fetch_slots
    assert slots.limit == 1
    held: dict[str, page_intake.Item] = {}
    first = threading.Thread(target=lambda: held.setdefault("item", page_intake.analyze_url(trickle.url())))
    first.start()
    waited = time.monotonic()
    while (slots.in_use < 1 or trickle.connections < 1) and time.monotonic() - waited < HANG_LIMIT_S:
        time.sleep(0.05)
    assert slots.in_use == 1  # held open by the server's trickle

    refused = page_intake.analyze_url(trickle.url("/another.jpg"))

    assert not refused.ok and "try again" in (refused.error or "")
    assert trickle.connections == 1  # the refused fetch never reached the server
    trickle.stop.set()  # the held fetch fails now and gives its slot back
    first.join(HANG_LIMIT_S)
    assert not first.is_alive() and not held["item"].ok and slots.in_use == 0


class _StandIn:
    """The batch actor's networks, standing in: an empty analysis per image."""

    def analyze_many(self, images, batch_size):
        from picmetric_core.results import Analysis

        return [Analysis(image.md5, image.width, image.height, (), (), (), ()) for image in images]


def test_a_batch_stores_each_item_under_its_intake_name(tmp_path, photo_server, monkeypatch):
    """The stages end to end (without Ray): a URL item is named after its redirects, as by the API."""
    from picmetric_core.batch import stages

    monkeypatch.setattr(stages, "node_id", lambda: "this-node")
    settings = make_settings(tmp_path, allow_private_urls=True)
    local = tmp_path / "2026" / "holiday.png"
    local.parent.mkdir()
    local.write_bytes(png_bytes(np.full((24, 32, 3), 90, np.uint8)))
    items = [f"{photo_server}/go?from=short", str(local)]
    job = stages._jobs(settings).start(items, total=len(items))
    actor = stages.AnalyzeActor(settings, batch_size=2)
    actor.analyzer = _StandIn()
    block = stages.read_block({"item": np.array(items, dtype=object)}, settings=settings, job_started=job.started_at)
    stored = stages.store_block(actor(stages.decode_block(block, settings=settings)), settings=settings, job_id=job.id)
    try:
        assert list(stored["status"]) == ["new", "new"]
        records = [stages._service(settings).get(md5).record for md5 in stored["md5"]]
        assert [(r.filename, r.source, r.source_url) for r in records] == [
            ("my dog.png", "url", items[0]),
            ("holiday.png", "upload", None),
        ]
    finally:
        stages._runtime(settings).close()
