"""Weights: what is found on disk, and the fetch path's size/checksum checks over real HTTP."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from picmetric_core.cli import main as cli_main
from picmetric_core.errors import WeightsError
from picmetric_core.models import weights

PAYLOAD = b"\x00\x01weights" * 1000


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def weights_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/w.bin"
    server.shutdown()


def test_shipped_weights_are_found_with_their_published_checksums(tmp_path):
    rows = {row.spec.key: row for row in weights.status(tmp_path)}
    for spec in weights.SHIPPED:
        assert rows[spec.key].path is not None, spec.key
        assert rows[spec.key].sha256 == spec.sha256
    assert rows["resnet50"].path is None and rows["yolov3"].path is None


def test_fetch_verifies_and_installs(tmp_path, weights_server):
    spec = replace(
        weights.YOLOV3, url=weights_server, size=len(PAYLOAD), md5=hashlib.md5(PAYLOAD).hexdigest()
    )
    path = weights.fetch(spec, tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert weights.locate(spec, tmp_path) == path


def test_fetch_refuses_a_file_with_the_wrong_checksum_and_leaves_nothing(tmp_path, weights_server):
    spec = replace(weights.YOLOV3, url=weights_server, size=len(PAYLOAD), md5="0" * 32)
    with pytest.raises(WeightsError, match="md5"):
        weights.fetch(spec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_refuses_a_truncated_download(tmp_path, weights_server):
    spec = replace(weights.YOLOV3, url=weights_server)  # the real size: 248,007,048 bytes
    with pytest.raises(WeightsError, match="expected 248,007,048"):
        weights.fetch(spec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_weights_status_command_says_what_will_run(tmp_path, monkeypatch, capsys):
    from picmetric_core.config import get_settings

    monkeypatch.setenv("PICMETRIC_MODELS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert cli_main(["weights", "status"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "EfficientNet-Lite2 (offline stand-in)" in out and "YOLOv3-tiny (offline stand-in)" in out
    assert weights.YOLOV3_TINY.sha256 in out
