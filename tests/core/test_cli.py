"""``picmetric analyze`` as a user runs it: a fresh process whose output is only results and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.photos import darknet_photo

pytestmark = pytest.mark.slow


def run_cli(*args: str, models_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The user's environment as it is (no TF_CPP_MIN_LOG_LEVEL from the test run), only our folders set.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL" and not k.startswith("PICMETRIC_")}
    env |= {"PICMETRIC_MODELS_DIR": str(models_dir), "PICMETRIC_DATA_DIR": str(cwd / "data")}
    return subprocess.run(
        [sys.executable, "-m", "picmetric_core.cli", "analyze", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_analyze_prints_results_and_errors_and_nothing_from_tensorflow(tmp_path, empty_models_dir):
    run = run_cli(str(darknet_photo("dog.jpg")), "missing.jpg", models_dir=empty_models_dir, cwd=tmp_path)
    assert run.returncode == 1  # one input failed
    assert run.stderr.splitlines() == ["picmetric: missing.jpg: no such file: missing.jpg"]
    assert "objects:" in run.stdout and "dog" in run.stdout
    assert not (tmp_path / "data").exists(), "analyze stores nothing"


def test_analyze_json_is_one_document_on_stdout(tmp_path, empty_models_dir):
    run = run_cli("--json", str(darknet_photo("dog.jpg")), models_dir=empty_models_dir, cwd=tmp_path)
    assert run.returncode == 0 and run.stderr == ""
    [document] = json.loads(run.stdout)
    assert document["input"].endswith("dog.jpg") and "dog" in {d["label"] for d in document["shown"]["detections"]}


def test_native_log_lines_stay_off_the_terminal_unless_something_breaks(capfd):
    from picmetric_core.errors import DatabaseUnavailable
    from picmetric_core.native_logs import native_stderr_to_log

    with native_stderr_to_log() as terminal:
        os.write(2, b"2026-12-03 INFO worker.py -- Started a local Ray instance.\n")
        print("batch: 1/1", file=terminal)
    assert capfd.readouterr().err == "batch: 1/1\n"

    with pytest.raises(RuntimeError), native_stderr_to_log():
        os.write(2, b"raylet: could not bind port 6379\n")
        raise RuntimeError("Ray did not start")
    assert "raylet: could not bind port 6379" in capfd.readouterr().err  # the lines explain the failure

    with pytest.raises(DatabaseUnavailable), native_stderr_to_log():
        os.write(2, b"chatter\n")
        raise DatabaseUnavailable("The database is not available right now; try again in a minute.")
    assert capfd.readouterr().err == ""  # the caller prints the clear message
