"""The CLI and the History page on the session's Postgres, without the networks: fixtures and helpers.

Loaded by ``tests/conftest.py`` as a pytest plugin (``cli_on_postgres``, ``history_page``); ``open_history``
runs the History page headless with AppTest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from picmetric_core.config import get_settings
from picmetric_core.lifecycle import ModelLoader
from tests.support.api import NoNetworks

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_on_postgres(pg_url, tmp_path, monkeypatch) -> Path:
    """``picmetric`` reads its settings from the environment: the session's Postgres, a folder of its own."""
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("PICMETRIC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PICMETRIC_MODELS_DIR", str(tmp_path / "models"))
    for name in ("S3_BUCKET", "PICMETRIC_STORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def history_page(cli_on_postgres, monkeypatch) -> Iterator[None]:
    """The page's service on Postgres, with a model loader that never loads the networks."""
    from picmetric_ui import resources

    monkeypatch.delenv("PICMETRIC_APP_PASSWORD", raising=False)
    monkeypatch.setattr(resources, "_loader", lambda _key: _no_networks_loader())
    yield


def _no_networks_loader() -> ModelLoader:
    # One per settings key, as the real (cached) one is.
    loader = _LOADERS.get(key := os.environ["PICMETRIC_DATA_DIR"])
    if loader is None:
        loader = _LOADERS[key] = ModelLoader(get_settings(), load=lambda _settings: NoNetworks())
    return loader


_LOADERS: dict[str, ModelLoader] = {}


def open_history(query: dict[str, str] | None = None, state: dict[str, Any] | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/1_History.py")
    for name, value in (query or {}).items():
        at.query_params[name] = value
    for name, value in (state or {}).items():
        at.session_state[name] = value
    return at.run()


def page_messages(at: AppTest) -> tuple[str, str]:
    warnings = " ".join(element.value for element in at.warning)
    errors = " ".join(element.value for element in at.error)
    return warnings, errors
