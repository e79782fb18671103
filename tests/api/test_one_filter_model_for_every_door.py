"""One history filter model for every door, and the API's thresholds within the sliders' ranges.

The v1 list, the export (API and ``picmetric export``) and the History page all fill
:class:`~picmetric_core.history.HistoryFilters`; the export used to drop ``batch`` and ``similar_to``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from picmetric_core import cli
from picmetric_core.batch.jobs import ItemRecord, JobStore
from picmetric_core.config import Settings
from picmetric_core.exports import ExportFilters
from picmetric_core.filters import SLIDER_RANGES
from picmetric_core.history import LABEL_MIN_SCORE, HistoryFilters
from tests.support.api import app_client
from tests.support.exports import TOKEN
from tests.support.history_page import open_history, page_messages
from tests.support.services import make_settings

UNKNOWN_MD5 = "0" * 32


# --- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "min_score"),
    [
        ({}, 0.0),
        ({"label": "dog"}, LABEL_MIN_SCORE),
        ({"label_kind": "detector"}, LABEL_MIN_SCORE),
        ({"label": "dog", "min_score": 0.6}, 0.6),
        ({"min_score": 0.6}, 0.6),
    ],
)
def test_min_score_defaults_to_the_label_threshold_only_with_a_label(filters, min_score):
    assert HistoryFilters(**filters).query().min_score == min_score


def test_the_query_takes_paging_and_the_face_threshold_beside_the_filters():
    query = HistoryFilters(md5="ABC", similar_to="F" * 32, batch=3, has_faces=True).query(
        min_face_score=0.95, limit=12, page=2, cursor=None, with_total=True
    )
    assert (query.md5, query.similar_to, query.batch, query.has_faces) == ("abc", "f" * 32, 3, True)
    assert (query.min_face_score, query.limit, query.page, query.with_total) == (0.95, 12, 2, True)


def test_export_flags_are_made_from_the_model_fields():
    flags = ["--batch", "7", "--similar-to", "ab" * 16, "--no-faces", "--label-kind", "classifier"]
    args = cli.build_parser().parse_args(["export", "--out", "x.csv", *flags])
    assert set(ExportFilters.model_fields) <= set(vars(args))
    expected = ExportFilters(batch=7, similar_to="ab" * 16, has_faces=False, label_kind="classifier")
    assert cli.model_from_flags(ExportFilters, args) == expected


# --- the API's thresholds ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def empty_client(tmp_path_factory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("history-filters-empty")
    with app_client(make_settings(folder, models_dir=folder / "models")) as client:
        yield client


def _outside_sliders() -> list[Any]:
    cases = []
    for name, slider in SLIDER_RANGES.items():
        for value in (round(slider.low - 0.05, 2), round(slider.high + 0.05, 2)):
            for path in ("/v1/analyses", "/v1/analyses/export", f"/v1/analyses/{UNKNOWN_MD5}"):
                cases.append(pytest.param(path, name, value, id=f"{path} {name}={value}"))
    return cases


@pytest.mark.parametrize(("path", "name", "value"), _outside_sliders())
def test_the_api_refuses_a_threshold_outside_its_slider_with_422(empty_client, path, name, value):
    response = empty_client.get(path, params={name: value})
    assert response.status_code == 422, response.text
    assert name in response.json()["error"]


@pytest.mark.parametrize("name", SLIDER_RANGES)
def test_the_api_takes_a_threshold_at_either_end_of_its_slider(empty_client, name):
    for value in (SLIDER_RANGES[name].low, SLIDER_RANGES[name].high):
        assert empty_client.get("/v1/analyses", params={name: value}).status_code == 200


# --- batch and similar_to, everywhere ------------------------------------------------------------


@pytest.fixture(scope="module")
def batched(stored) -> tuple[Settings, dict[str, str], int]:
    """test_exports' four analysed photos, two of them (and a failed item) in a batch job: (settings, md5s, job id)."""
    settings, service, md5s = stored
    jobs = JobStore(service.engine)
    job = jobs.start(["/photos"], total=3)
    jobs.record(
        job.id,
        [
            ItemRecord("/photos/dog.jpg", md5s["dog.jpg"], "new"),
            ItemRecord("/photos/eagle.jpg", md5s["eagle.jpg"], "seen"),
            ItemRecord("/photos/person.jpg", md5s["person.jpg"], "failed", error="refused"),
        ],
    )
    return settings, md5s, job.id


def _client(settings: Settings) -> TestClient:
    client = app_client(settings)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


FILTER_CASES = {
    "batch": lambda md5s, job: {"batch": job},
    "unknown batch": lambda md5s, job: {"batch": job + 1},
    "similar_to": lambda md5s, job: {"similar_to": md5s["dog.jpg"]},
    "similar_to unknown md5": lambda md5s, job: {"similar_to": UNKNOWN_MD5},
    "batch and similar_to": lambda md5s, job: {"batch": job, "similar_to": md5s["eagle.jpg"].upper()},
}


def _listed(client: TestClient, filters: dict[str, Any]) -> set[str]:
    response = client.get("/v1/analyses", params={**filters, "limit": 200})
    assert response.status_code == 200, response.text
    return {item["md5"] for item in response.json()["items"]}


@pytest.mark.slow
@pytest.mark.parametrize("case", FILTER_CASES)
def test_the_api_export_honours_batch_and_similar_to_as_the_list_does(batched, case):
    settings, md5s, job = batched
    filters = FILTER_CASES[case](md5s, job)
    with _client(settings) as client:
        listed = _listed(client, filters)
        response = client.get("/v1/analyses/export", params={**filters, "format": "coco"})
    assert response.status_code == 200, response.text
    assert {image["md5"] for image in response.json()["images"]} == listed
    if case == "batch":
        assert listed == {md5s["dog.jpg"], md5s["eagle.jpg"]}  # the failed item is not the job's
    if "unknown" in case:
        assert listed == set()


@pytest.mark.slow
def test_cli_export_takes_batch_and_similar_to(batched, tmp_path, monkeypatch, capsys):
    settings, md5s, job = batched
    monkeypatch.setattr(cli, "get_settings", lambda: settings)  # the stored photos' database and store
    exported = {}
    for case in ("batch", "similar_to", "batch and similar_to"):
        filters = FILTER_CASES[case](md5s, job)
        flags = [part for name, value in filters.items() for part in (f"--{name.replace('_', '-')}", str(value))]
        out = tmp_path / f"{case}.json"
        assert cli.main(["export", "--format", "coco", *flags, "--out", str(out)]) == 0
        exported[case] = {image["md5"] for image in json.loads(out.read_text())["images"]}
    assert cli.main(["export", "--batch", "0", "--out", str(tmp_path / "never.csv")]) == 2
    assert "--batch: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert not (tmp_path / "never.csv").exists()
    with _client(settings) as client:
        for case, found in exported.items():
            assert found == _listed(client, FILTER_CASES[case](md5s, job)), case
    assert exported["batch"] == {md5s["dog.jpg"], md5s["eagle.jpg"]}


# --- the History page's link ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "warning"),
    [
        pytest.param({"similar_to": "xyz"}, "The link's similar_to is not the md5 of a stored photo", id="not an md5"),
        pytest.param({"similar_to": "a\x00"}, "The link's similar_to is not the md5 of a stored photo", id="nul"),
        pytest.param({"batch": "0"}, "The link's batch is not a batch job id", id="batch 0"),
        pytest.param({"similar_to": UNKNOWN_MD5, "batch": "7"}, None, id="both, well formed"),
    ],
)
@pytest.mark.usefixtures("history_page")
def test_history_page_reads_batch_and_similar_to_from_its_link(query, warning):
    at = open_history(query)
    assert not at.exception, at.exception
    warnings, errors = page_messages(at)
    assert not errors, errors
    if warning is None:
        assert not warnings, warnings
        assert "No analyses match these filters." in [info.value for info in at.info]
    else:
        assert warning in warnings, warnings
