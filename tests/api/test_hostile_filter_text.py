"""Hostile text in a filter is refused with a plain message, never a 500.

A NUL in a history or export filter used to reach Postgres (psycopg2: "A string literal cannot
contain NUL"), which answered 500 and reset the keep-alive connection. Every text a user filters or
looks up by (API query values, CLI flags, the History page's inputs and link) now goes through one
rule, :func:`picmetric_core.text_filters.check_filter_text`: no control characters, lone surrogates
or bidi controls, and a bounded length. The API cases run on real Postgres, where the bug lived
(SQLite accepts NUL).

A lone surrogate cannot travel in a URL (its UTF-8 bytes, ``%ED%A0%80``, are invalid and arrive as
U+FFFD); it reaches the code from the command line, where bytes that are not UTF-8 become surrogates.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from picmetric_core import cli
from picmetric_core.api import create_app
from picmetric_core.errors import FilterRejected, PicMetricError
from picmetric_core.history import HistoryQuery
from picmetric_core.text_filters import check_filter_text, filter_text_problem
from tests.support.api import app_client, serving
from tests.support.history_page import open_history, page_messages
from tests.support.services import make_settings

MAX_BODY_CHARS = 2_000  # an error body never echoes a 10 kB value back

HOSTILE_QUERY_VALUES = {
    "nul": "%00",
    "nul at the end": "dog%00",
    "nul inside": "a%00b",
    "lone surrogate bytes": "%ED%A0%80",
    "10 kB": "a" * 10_240,
    "right-to-left override": "dog%E2%80%AE",
    "left-to-right isolate": "%E2%81%A6dog",
}
"""Raw (already percent-encoded) query values."""

ARRIVES_AS_VALID_TEXT = {"lone surrogate bytes"}
"""Invalid UTF-8 reaches the app as U+FFFD, which a stored file name may hold: searched for, not refused."""

HOSTILE_TEXTS = {
    "nul": "dog\x00",
    "escape": "\x1b[31mdog",
    "newline": "do\ng",
    "del": "dog\x7f",
    "c1 control": "dog\x85",
    "lone surrogate": "dog\ud800",
    "surrogate escape": "dog\udcff",
    "right-to-left override": "\u202egpj.exe",
    "first strong isolate": "dog\u2068",
    "10 kB": "a" * 10_240,
}
"""Decoded text, as the core, the CLI and the page receive it."""

NUL_FILTER_URLS = [
    # The requests that used to answer 500 and reset the keep-alive connection.
    "/v1/analyses/export?format=csv&label=%00",
    "/v1/analyses/export?format=coco&label=%00",
    "/v1/analyses/export?format=zip&label=%00",
    "/v1/analyses/export?format=csv&filename=a%00b",
    "/v1/analyses/export?format=csv&label=dog%00",
    "/v1/analyses?label=%00",
]

PATH_VALUES = {
    "md5": "0" * 32,
    "kind": "original",
    "job_id": "1",
    "key": f"{'0' * 32}/original.jpg",
    "video_id": "0" * 32,
    "video_or_job": "0" * 32,
}
"""A valid value for each path parameter, used while another parameter is fuzzed."""

REQUIRED_QUERY_VALUES = {"url": "http://127.0.0.1/photo.jpg"}  # refused (private) before any fetch
"""A valid value for each required query parameter, used while another parameter is fuzzed."""


def get_parameters() -> list[tuple[str, str, str]]:
    """Every parameter of every GET route in the API's schema: (path template, name, "query" or "path")."""
    app = create_app(make_settings(Path(tempfile.gettempdir()) / "picmetric-hostile-filters"))
    found = []
    for path, operations in app.openapi()["paths"].items():
        for parameter in operations.get("get", {}).get("parameters", []):
            found.append((path, parameter["name"], parameter["in"]))
    return found


def request_target(path: str, name: str, where: str, value: str) -> str:
    """``path`` with ``value`` as parameter ``name`` and valid values for every other required one."""
    unknown = {part[1:-1] for part in path.split("/") if part.startswith("{")} - PATH_VALUES.keys() - {name}
    assert not unknown, f"add a valid value for the path parameter(s) {unknown} to PATH_VALUES"
    filled = {**PATH_VALUES, **({name: value} if where == "path" else {})}
    target = path.format(**filled)
    query = {key: given for key, given in REQUIRED_QUERY_VALUES.items() if key in path_query_names(path)}
    if where == "query":
        query[name] = value
    return target + ("?" + "&".join(f"{key}={given}" for key, given in query.items()) if query else "")


def path_query_names(path: str) -> set[str]:
    return {name for template, name, where in PARAMETERS if template == path and where == "query"}


PARAMETERS = get_parameters()
CASES = [
    pytest.param(path, name, where, value, label not in ARRIVES_AS_VALID_TEXT, id=f"GET {path} {name}={label}")
    for path, name, where in PARAMETERS
    for label, value in HOSTILE_QUERY_VALUES.items()
]


def assert_no_server_error(response: Any) -> None:
    """No 5xx; a 4xx is a short JSON ``{"error": ...}`` without a traceback."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        assert_plain_refusal(response, response.status_code)


def assert_plain_refusal(response: Any, status: int | None = None, *words: str) -> str:
    """A 4xx (or exactly ``status``) with a JSON ``{"error": ...}`` body naming ``words``; returns the message."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert 400 <= response.status_code < 500 if status is None else response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word.lower() in message.lower(), message
    assert "Traceback" not in response.text
    assert len(response.text) < MAX_BODY_CHARS, response.text[:500]
    return message


@pytest.fixture(scope="module")
def pg_client(pg_url: str, tmp_path_factory) -> Iterator[TestClient]:
    """The API on the session's Postgres database and a local store, networks never loaded."""
    folder = tmp_path_factory.mktemp("hostile-filters")
    with app_client(make_settings(folder, database_url=pg_url, models_dir=folder / "models")) as client:
        yield client


# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE_TEXTS.values(), ids=HOSTILE_TEXTS.keys())
def test_the_rule_refuses_hostile_text_with_a_message_naming_the_filter(text):
    with pytest.raises(FilterRejected, match=r"^The label filter (cannot contain|is) ") as refused:
        check_filter_text("label filter", text)
    assert refused.value.status == 422
    assert isinstance(refused.value, PicMetricError) and isinstance(refused.value, ValueError)
    assert text not in str(refused.value)  # the value is never echoed


@pytest.mark.parametrize("text", ["dog", "hot dog", "café", "犬", "كلب", "👩‍💻", "a" * 200, ""])
def test_the_rule_accepts_ordinary_text_in_any_script(text):
    assert check_filter_text("label filter", text) == text
    assert filter_text_problem(text) is None


@pytest.mark.parametrize("field", ["label", "filename", "md5", "similar_to", "cursor"])
@pytest.mark.parametrize("text", HOSTILE_TEXTS.values(), ids=HOSTILE_TEXTS.keys())
def test_a_history_query_refuses_hostile_text_in_every_text_field(field, text):
    with pytest.raises(FilterRejected):
        HistoryQuery(**{field: text})


# --- the API, on Postgres ----------------------------------------------------------------------


@pytest.mark.parametrize("url", NUL_FILTER_URLS)
def test_urls_with_a_nul_in_a_filter_are_refused_with_422_and_the_connection_answers_on(pg_client, url):
    assert_plain_refusal(pg_client.get(url), 422, "cannot contain control characters")
    assert pg_client.get("/v1/analyses?label=dog").status_code == 200


def test_every_parameter_of_every_get_route_is_fuzzed():
    """The table comes from the schema; a GET route left out of it must take no parameters."""
    app = create_app(make_settings(Path(tempfile.gettempdir()) / "picmetric-hostile-filters"))
    in_schema = {path for path, _, _ in PARAMETERS} | set(app.openapi()["paths"])
    for route in app.routes:
        if isinstance(route, APIRoute) and "GET" in route.methods and route.path not in in_schema:
            assert not get_flat_params(route.dependant), f"GET {route.path} takes parameters the table misses"
    fuzzed = {(path, name) for path, name, _ in PARAMETERS}
    assert {("/v1/analyses", "label"), ("/v1/analyses/export", "filename"), ("/do_data_science_url", "url")} <= fuzzed


@pytest.mark.parametrize(("path", "name", "where", "value", "refused"), CASES)
def test_no_hostile_value_in_any_get_parameter_makes_a_5xx(pg_client, path, name, where, value, refused):
    response = pg_client.get(request_target(path, name, where, value))
    assert_no_server_error(response)
    if refused:
        assert_plain_refusal(response)


@pytest.mark.parametrize("value", ["%00", "http://example.com/a%00b", "http://example.com/%E2%80%AEgpj.png"])
def test_a_legacy_url_with_a_control_character_is_refused_before_any_fetch(pg_client, value):
    assert_plain_refusal(pg_client.get(f"/do_data_science_url?url={value}"), 422, "url")
    assert_plain_refusal(pg_client.post("/do_data_science_url", data={"url": value.replace("%00", "\x00")}), 422)
    assert_plain_refusal(pg_client.post("/v1/analyses", data={"url": value.replace("%00", "\x00")}), 422)


def test_a_batch_source_with_a_nul_is_refused(pg_client):
    response = pg_client.post("/v1/batches", json={"sources": ["/photos/a\x00b"]})
    assert_plain_refusal(response, 422, "batch source", "control characters")


def test_a_keep_alive_connection_survives_hostile_filters(pg_url, tmp_path):
    """On a real uvicorn server, one HTTP/1.1 connection answers every URL with a NUL filter and then a good request."""
    settings = make_settings(tmp_path, database_url=pg_url, models_dir=tmp_path / "models")
    with serving(settings) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.connect()
            first_socket = connection.sock
            for url in [*NUL_FILTER_URLS, "/v1/analyses?label=dog"]:
                connection.request("GET", url)
                response = connection.getresponse()
                body = response.read()
                expected = 200 if url.endswith("=dog") else 422
                assert response.status == expected, f"{url}: {response.status} {body[:300]!r}"
                assert not response.will_close, f"{url}: the server closed the connection"
                assert connection.sock is first_socket, f"{url}: answered on a new connection"
        finally:
            connection.close()


# --- the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--label", "--filename", "--md5"])
@pytest.mark.parametrize("text", HOSTILE_TEXTS.values(), ids=HOSTILE_TEXTS.keys())
def test_cli_export_refuses_hostile_filters_with_exit_code_2(cli_on_postgres, capsys, flag, text):
    out = cli_on_postgres / "export.csv"
    assert cli.main(["export", "--out", str(out), flag, text]) == 2
    error = capsys.readouterr().err
    assert error.startswith("picmetric export: The ") and "filter" in error, error
    assert "Traceback" not in error and text not in error
    assert not out.exists()


def test_cli_export_refuses_bytes_that_are_not_utf8(cli_on_postgres):
    """Through a real process: argv bytes that are not UTF-8 arrive as lone surrogates."""
    out = cli_on_postgres / "export.csv"
    command = [sys.executable, "-m", "picmetric_core.cli", "export", "--out", str(out), "--label", b"dog\xff"]
    done = subprocess.run(command, capture_output=True, env=os.environ.copy(), timeout=120, check=False)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, stderr
    assert "picmetric export: The label filter is not valid text" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()


# --- the History page ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "state", "words"),
    [
        pytest.param({"md5": "\x00"}, None, "md5 in the link cannot contain control characters", id="md5 nul"),
        pytest.param({"md5": "a" * 10_240}, None, "md5 in the link is too long", id="md5 10 kB"),
        pytest.param({"compare": "\u202e"}, None, "compare list in the link cannot contain bidirectional", id="bidi"),
        pytest.param({"batch": "99999999999"}, None, "batch is not a batch job id", id="batch too large"),
        pytest.param({"batch": "²"}, None, "batch is not a batch job id", id="batch superscript digit"),
        pytest.param(None, {"label": "dog\x00"}, "label filter cannot contain control characters", id="label nul"),
        pytest.param(None, {"search": "a\x00b"}, "file name or md5 filter cannot contain control", id="search nul"),
        pytest.param(None, {"search": "\u2066dog"}, "md5 filter cannot contain bidirectional", id="isolate"),
    ],
)
def test_history_page_warns_about_a_hostile_filter_and_shows_the_gallery(history_page, query, state, words):
    at = open_history(query, state)
    assert not at.exception, at.exception
    warnings, errors = page_messages(at)
    assert words in warnings, (warnings, errors)
    assert not errors, errors
    assert [title.value for title in at.title] == ["History"]  # the gallery, without the bad value
