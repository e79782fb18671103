"""The runtime: one service and one batch launcher per runtime, closed together, a failed start tried again,
and one shared runtime per process and settings for the app, the CLI and the batch workers."""

from __future__ import annotations

import doctest
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from picmetric_core import runtime as runtime_module
from picmetric_core.api import create_app
from picmetric_core.errors import DatabaseUnavailable
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.runtime import Runtime, settings_key, shared_runtime
from picmetric_core.service import PicMetricService
from tests.support.services import make_settings


class _NoNetworks:
    models = ()


def no_networks(settings) -> ModelLoader:
    return ModelLoader(settings, load=lambda _settings: _NoNetworks())


@pytest.fixture
def runtime(tmp_path):
    settings = make_settings(tmp_path, batch_allowed_sources=[str(tmp_path)])
    made = Runtime(settings, no_networks(settings))
    yield made
    made.close()


def test_the_docstring_examples_run():
    result = doctest.testmod(runtime_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_one_service_and_one_launcher_per_runtime_however_many_threads_ask(runtime):
    with ThreadPoolExecutor(8) as pool:
        services = set(map(id, pool.map(lambda _: runtime.service(), range(16))))
        launchers = set(map(id, pool.map(lambda _: runtime.launcher(), range(16))))
    assert len(services) == 1 and len(launchers) == 1
    assert runtime.launcher().jobs.engine is runtime.service().engine  # on the service's database
    assert runtime.jobs().engine is runtime.service().engine


def test_close_closes_the_launcher_and_the_service_and_a_later_call_opens_them_again(runtime, monkeypatch):
    service, launcher = runtime.service(), runtime.launcher()
    closed: list[str] = []
    monkeypatch.setattr(launcher, "close", lambda: closed.append("launcher"))
    monkeypatch.setattr(service, "close", lambda: closed.append("service"))

    runtime.close()

    assert closed == ["launcher", "service"]  # the launcher first: its jobs write through the service's engine
    assert runtime.service() is not service and runtime.launcher() is not launcher
    runtime.close()
    runtime.close()  # closing twice, or with nothing open, is harmless


def test_a_service_that_failed_to_start_is_tried_again(runtime, monkeypatch):
    attempts: list[bool] = []
    database_down = True
    real = PicMetricService

    def flaky(settings, analyzer):
        attempts.append(database_down)
        if database_down:
            raise DatabaseUnavailable()
        return real(settings, analyzer)

    monkeypatch.setattr(runtime_module, "PicMetricService", flaky)
    runtime.warm_up()  # logs the failure, raises nothing
    assert runtime.loader.state != "idle"  # the networks started loading all the same
    with pytest.raises(DatabaseUnavailable):
        runtime.launcher()  # the launcher needs the service: the same failure, nothing half made
    database_down = False
    assert isinstance(runtime.service(), real)
    assert attempts == [True, True, False] and runtime.launcher() is runtime.launcher()
    assert len(attempts) == 3  # made once, then kept


def test_the_api_asks_its_runtime_for_the_one_launcher(tmp_path):
    settings = make_settings(tmp_path, batch_allowed_sources=[str(tmp_path)])
    app = create_app(settings, loader=no_networks(settings))
    runtime = app.state.runtime
    assert isinstance(runtime, Runtime)
    with TestClient(app) as client:
        assert client.get("/v1/batches").json() == {"items": []}
        launcher = runtime.launcher()
        assert client.get("/v1/batches/1").status_code == 404
        assert runtime.launcher() is launcher
        closed = threading.Event()
        real_close = launcher.close
        launcher.close = lambda: (closed.set(), real_close())
    assert closed.is_set()  # the app's shutdown closed it


def test_one_shared_runtime_per_settings_and_loader(tmp_path):
    settings = make_settings(tmp_path)

    def other_loader(current):
        return ModelLoader(current, warm_up=True)

    shared = shared_runtime(settings)
    assert shared_runtime(settings.model_copy()) is shared
    assert shared_runtime(make_settings(tmp_path)) is shared  # equal settings, another object
    assert shared_runtime(settings.model_copy(update={"url_max_concurrent": 2})) is not shared
    warming = shared_runtime(settings, loader_factory=other_loader)
    assert warming is not shared and warming.loader._warm_up
    assert shared_runtime(settings.model_copy(), loader_factory=other_loader) is warming


def test_the_settings_key_follows_every_setting_secrets_included(tmp_path):
    settings = make_settings(tmp_path, database_url="postgresql+psycopg2://u:one@h/db", s3_secret="one")
    key = settings_key(settings)
    assert settings_key(settings.model_copy(update={"s3_secret": SecretStr("two")})) != key
    assert settings_key(settings.model_copy(update={"database_url": "postgresql+psycopg2://u:two@h/db"})) != key
    assert settings_key(settings.model_copy(update={"max_image_bytes": 1024})) != key
    assert "one" not in key and len(key) == 64


def test_the_apps_pages_and_a_batch_worker_ask_the_shared_runtime(tmp_path, monkeypatch):
    from picmetric_core.batch import stages
    from picmetric_core.config import get_settings
    from picmetric_ui import resources

    monkeypatch.setenv("PICMETRIC_DATA_DIR", str(tmp_path))
    for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        app_runtime = resources.runtime()
        assert app_runtime is shared_runtime(settings, loader_factory=resources._loader)
        assert resources.service() is app_runtime.service() and resources.launcher() is app_runtime.launcher()
        assert resources.warmup() is app_runtime.loader

        worker = stages._runtime(settings)
        assert worker is not app_runtime and stages._service(settings) is worker.service()
        assert stages._runtime(settings) is worker  # once per worker process, not once per block
        with pytest.raises(Exception, match="never runs the networks"):
            worker.loader.analyzer(wait_s=30).analyze(None)
    finally:
        for made in (resources.runtime(), stages._runtime(get_settings())):
            made.close()
        get_settings.cache_clear()
