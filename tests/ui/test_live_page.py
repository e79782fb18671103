"""The Live page in real Chromium: a fake camera fed from a clip of dog.jpg, START clicked inside the
component, frames counted as they come back analysed, a snapshot stored, screenshots taken; and all of it
on loopback (a loopback-only network namespace when ``unshare -rn`` works here, and checks either way).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.api import NoNetworks
from tests.support.browser import ROOT
from tests.support.live import is_loopback

WANTED_FRAMES = 15


class FakeStream:
    """What ``webrtc_streamer`` returns before START: no processor, not playing."""

    video_processor = None
    state = SimpleNamespace(playing=False)


@pytest.fixture
def live_page(tmp_path, monkeypatch) -> list[dict]:
    """The Live page's settings on a fresh data folder with stand-in networks; ``webrtc_streamer``'s
    arguments are recorded (AppTest cannot run the component itself)."""
    from picmetric_core.config import get_settings
    from picmetric_core.lifecycle import ModelLoader
    from picmetric_ui import live, resources

    monkeypatch.setenv("PICMETRIC_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PICMETRIC_APP_PASSWORD", raising=False)
    monkeypatch.delenv("PICMETRIC_ICE_SERVERS", raising=False)
    monkeypatch.setattr(resources, "_loader", lambda current: ModelLoader(current, load=lambda _: NoNetworks()))
    calls: list[dict] = []

    def streamer(**kwargs):
        calls.append(kwargs)
        return FakeStream()

    monkeypatch.setattr(live, "webrtc_streamer", streamer)
    get_settings.cache_clear()
    yield calls
    get_settings.cache_clear()


def open_live() -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/3_Live.py")
    return at.run()


def test_the_page_asks_for_no_ice_server_and_shows_its_controls(live_page) -> None:
    at = open_live()
    assert not at.exception
    (call,) = live_page
    assert call["rtc_configuration"] == {"iceServers": []}  # an empty list: no public STUN filled in
    assert call["media_stream_constraints"]["audio"] is False and call["async_processing"] is False
    labels = {slider.label for slider in at.slider} | {s.label for s in at.select_slider}
    assert {"Object confidence", "Face confidence", "Input size (px)"} <= labels
    assert at.multiselect(key="live_classes").label == "Classes to show"
    assert "Press START" in " ".join(c.value for c in at.caption)
    at.button(key="live_snapshot_button").click().run()
    assert "Start the camera first" in " ".join(w.value for w in at.warning)


def test_ice_servers_come_from_the_settings(live_page, monkeypatch) -> None:
    turn = [{"urls": ["turn:turn.example.org:3478"], "username": "picmetric", "credential": "secret"}]
    monkeypatch.setenv("PICMETRIC_ICE_SERVERS", json.dumps(turn))
    at = open_live()
    assert not at.exception
    assert live_page[0]["rtc_configuration"] == {"iceServers": turn}


def _namespace_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


def _candidate_address(address: str | None) -> bool:
    """A browser candidate's address: loopback, or missing (Chromium hides some)."""
    if not address:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # an mDNS name: the browser would ask the network to resolve it


@pytest.fixture(scope="module")
def live_report(tmp_path_factory, empty_models_dir) -> dict:
    workdir = tmp_path_factory.mktemp("live")
    command = [sys.executable, "-m", "tests.support.live_browser", str(workdir), str(empty_models_dir)]
    if _namespace_works():
        command = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=560)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return json.loads((Path(workdir) / "live.json").read_text())


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_camera_comes_back_analysed_frame_after_frame(live_report) -> None:
    assert live_report["processed_shown"] >= WANTED_FRAMES, live_report["readout"]
    assert live_report["video"] and live_report["video"][0] > 0  # the returned video plays in the page
    assert (
        live_report["history_title"] == "PicMetric · History" and live_report["history_while_streaming_s"] < 30
    )  # other pages answer
    for path in live_report["screenshots"]:
        assert Path(path).stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_snapshot_is_stored_as_a_full_analysis_from_the_live_camera(live_report) -> None:
    text = live_report["snapshot_text"]
    assert "live camera" in text and "dog" in text.lower()
    ((filename, source),) = live_report["stored"]
    assert filename.startswith("live camera") and source == "live"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_stop_in_the_browser_frees_the_stream_workers(live_report) -> None:
    assert live_report["workers_streaming"] >= 1
    left, waited_s = live_report["workers_after_stop"]
    assert left == 0, f"{left} live worker threads still alive {waited_s} s after STOP"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_nothing_leaves_loopback(live_report) -> None:
    assert live_report["outside_requests"] == []  # the page's HTTP requests
    assert live_report["outside_ice"] == []  # the app's STUN checks and media
    peer = live_report["peer"]
    assert peer["configs"] and all(config["iceServers"] == [] for config in peer["configs"])
    assert peer["pairs"], "no candidate pair was tried"
    for local, remote, _ in peer["pairs"]:
        assert _candidate_address(local) and is_loopback(remote or ""), (local, remote)
    assert all(_candidate_address(address) for address in peer["local"] + peer["remote"]), peer
    if _namespace_works():
        interfaces = [line.split()[0] for line in live_report["interfaces"].splitlines() if line.strip()]
        assert interfaces == ["lo"]
