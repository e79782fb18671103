"""Property-based fuzz of the API from its own OpenAPI schema (schemathesis): no request makes it fail.

The app runs in process (ASGI) on a temporary SQLite database and local store, without a token so
that generated requests reach the endpoints' own code. Every response must be a documented error or
success: never a 500 (a 503 is documented, for a store or database that is down).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from picmetric_core.api import create_app
from tests.fixtures_services import make_settings

MAX_EXAMPLES = 60
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


# Built at import: schemathesis' pytest fixture loader does not work with this pytest, so the app's
# folder is a temporary one, removed after the module.
FOLDER = Path(tempfile.mkdtemp(prefix="picmetric-fuzz-"))
APP = create_app(
    make_settings(
        FOLDER,
        models_dir=FOLDER / "models",
        url_connect_timeout_s=0.5,
        url_read_timeout_s=1.0,
        max_image_bytes=2_000_000,
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _remove_the_folder():
    yield
    APP.state.runtime.close()
    shutil.rmtree(FOLDER, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_no_request_makes_the_server_fail(case):
    response = case.call()
    assert response.status_code < 500 or response.status_code == 503, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        assert "error" in response.json(), response.text[:500]
    # What the schema promises about responses. (Schema-valid requests may still be refused: a
    # generated "binary" is rarely an image, and a generated string rarely a reachable URL.)
    case.validate_response(response, checks=CONFORMANCE)
