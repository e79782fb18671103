"""The API for the tests: a real uvicorn process, the app in this process or on uvicorn in a thread, and
a local server that trickles bytes.

``start_server`` runs ``uvicorn`` as a user would (its own process, its settings from the environment);
``app_client`` and ``serving`` run the app with networks that are never loaded (``NoNetworks``) unless a test
hands its own analyzer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from picmetric_core.api import create_app
from picmetric_core.config import Settings
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.pipeline import RuntimeInfo
from tests.support.browser import free_port

HANG_LIMIT_S = 60  # far beyond every budget under test; a request still running then has hung


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)


def _clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any PicMetric, database or S3 setting, plus ``overrides``."""
    dropped = ("PICMETRIC_", "DATABASE_URL", "S3_", "EXTRAARGS")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(dropped)}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env | overrides


def start_server(workdir: Path, models_dir: Path, *, wait_for_networks: bool = True, **env: str) -> Server:
    """``uvicorn picmetric_core.api:create_app --factory`` on a free port, run from ``workdir`` (no .env)."""
    port = free_port()
    log = workdir / "uvicorn.log"
    command = [
        str(Path(sys.executable).parent / "uvicorn"),
        "picmetric_core.api:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    settings_env = {"PICMETRIC_DATA_DIR": str(workdir / "data"), "PICMETRIC_MODELS_DIR": str(models_dir)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=workdir, env=_clean_env(**(settings_env | env)), stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 180
    while True:
        try:
            health = httpx.get(f"{server.url}/healthz", timeout=2).json()
            if not wait_for_networks or health["networks"]["state"] != "loading":
                assert health["networks"]["state"] != "failed", health
                return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(f"the API server did not become ready:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()


class NoNetworks:
    """For apps whose tests never reach the networks (refused earlier); fails loudly if they do."""

    models = ()
    load_seconds: dict = {}  # noqa: RUF012
    classifier = detector = faces = None

    def analyze(self, image, on_stage=None):
        raise AssertionError("the networks were not meant to run in this test")

    def runtime(self) -> RuntimeInfo:
        return RuntimeInfo(backend="none", device="none (the networks are not loaded in this test)", load_seconds={})


def app_client(settings: Settings, analyzer: Any = None) -> TestClient:
    loader = ModelLoader(settings, load=lambda _settings: analyzer or NoNetworks())
    return TestClient(create_app(settings, loader=loader), raise_server_exceptions=False)


class TrickleServer:
    """Answers every request with a status line and then one header byte every 50 ms, forever."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/photo.jpg") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not self.stop.is_set():
                    conn.sendall(b"z")
                    time.sleep(0.05)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@contextmanager
def serving(settings: Settings) -> Iterator[int]:
    """The app on a real uvicorn (in a thread) on a free port: chunked bodies arrive as they are sent."""
    loader = ModelLoader(settings, load=lambda _settings: NoNetworks())
    config = uvicorn.Config(create_app(settings, loader=loader), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - started < HANG_LIMIT_S, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(HANG_LIMIT_S)
