"""How the app is served: on this machine only unless a sign-in is set, asking nothing of the network at start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

import pytest
from pydantic import SecretStr

from picmetric_core.addresses import is_loopback
from picmetric_core.config import Settings
from picmetric_ui.serving import ExposedWithoutSignIn, server_flags
from tests.support.browser import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


def listening_addresses(pid: int) -> set[str]:
    """The addresses the process ``pid`` listens on for TCP (``ss`` reads the kernel's socket table)."""
    table = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3].rsplit(":", 1)[0].strip("[]") for line in table.splitlines() if f"pid={pid}," in line}


def test_a_network_address_needs_a_password():
    with pytest.raises(ExposedWithoutSignIn, match="PICMETRIC_APP_PASSWORD"):
        server_flags(Settings(_env_file=None), "0.0.0.0")
    signed = Settings(_env_file=None, app_password=SecretStr("a long shared secret"))
    assert server_flags(signed, "0.0.0.0")[:2] == ["--server.address", "0.0.0.0"]
    assert server_flags(Settings(_env_file=None))[:2] == ["--server.address", "127.0.0.1"]


def test_bootstraps_flags_refuse_a_network_address_without_a_password():
    env = {**os.environ, "HOST": "0.0.0.0", "PICMETRIC_APP_PASSWORD": ""}
    refused = subprocess.run(
        [sys.executable, "-m", "picmetric_ui.serving"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert "PICMETRIC_APP_PASSWORD" in refused.stderr and not refused.stdout


def test_the_app_started_plainly_listens_on_this_machine_only_and_asks_nothing_outside(tmp_path):
    """``streamlit run streamlit_app.py`` with no address flag, as a user might start it."""
    port = free_port()
    env = {**os.environ, "PICMETRIC_DATA_DIR": str(tmp_path)}
    env.pop("STREAMLIT_SERVER_ADDRESS", None)
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log_path.read_text()
            with suppress(OSError):
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    break
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.3)
        addresses = listening_addresses(server.pid)
    finally:
        stop_process(server)
    assert addresses and all(is_loopback(address) for address in addresses), addresses
    printed = log_path.read_text()
    assert "Network URL" not in printed and "External URL" not in printed, printed
    assert "external IP" not in printed, printed  # Streamlit's look-up of the machine's public address


def test_the_server_takes_the_larger_of_the_image_and_video_upload_limits():
    megabyte = 1024 * 1024
    clips_larger = Settings(_env_file=None, max_image_bytes=20 * megabyte, video_max_bytes=500 * megabyte)
    photos_larger = Settings(_env_file=None, max_image_bytes=64 * megabyte, video_max_bytes=30 * megabyte)
    assert server_flags(clips_larger)[-2:] == ["--server.maxUploadSize", "500"]
    assert server_flags(photos_larger)[-2:] == ["--server.maxUploadSize", "64"]
