"""Property-based fuzz of the API from its own OpenAPI schema (schemathesis): no request makes it fail.

The app runs in process (ASGI) on a temporary SQLite database and local store, without a token so
that generated requests reach the endpoints' own code. Every response must be a documented error or
success: never a 500 (a 503 is documented, for a store or database that is down).
"""

from __future__ import annotations

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
from picmetric_core.config import Settings
from tests.support.services import make_settings

MAX_EXAMPLES = 60
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


# The schema is read at import (schemathesis parametrizes from it) from an app that never runs: nothing
# starts, opens or loads until a test calls the app, which the module's fixture builds in its own folder.
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None, data_dir=Path("/nonexistent"))).openapi())


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        make_settings(
            folder,
            models_dir=folder / "models",
            url_connect_timeout_s=0.5,
            url_read_timeout_s=1.0,
            max_image_bytes=2_000_000,
        )
    )
    yield app
    app.state.runtime.close()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_no_request_makes_the_server_fail(case, app):
    response = case.call(app=app)
    assert response.status_code < 500 or response.status_code == 503, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        assert "error" in response.json(), response.text[:500]
    # What the schema promises about responses. (Schema-valid requests may still be refused: a
    # generated "binary" is rarely an image, and a generated string rarely a reachable URL.)
    case.validate_response(response, checks=CONFORMANCE)
