"""``python -m tests.support.live_browser WORKDIR MODELS_DIR``: the Live page in real Chromium with a fake
camera fed from a clip of dog.jpg; writes ``WORKDIR/live.json`` with what it saw, for
``tests/ui/test_live_page.py`` to judge.

The test runs this in a loopback-only network namespace (``unshare -rn``) when it can, so no packet can
leave the machine; either way the app's aioice sends to loopback only and records any other attempt, the
browser's requests to other hosts are aborted and recorded, and the browser's own ICE candidates and
pairs are read back from its peer connection.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ROOT,
    SCREENSHOTS,
    free_port,
    keep_on_loopback,
    outside_requests,
    snapshot,
    stop_process,
    wait_for_models,
    wait_for_run,
)
from tests.support.live import dog_rgb, write_y4m

WANTED_FRAMES = 15
# Records every RTCPeerConnection a frame makes (the component's iframe included) and the config it got.
RECORD_PEERS_JS = """
(() => {
  const Native = window.RTCPeerConnection;
  if (!Native) return;
  window.__pcs = []; window.__pcConfigs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(config, ...rest) {
      super(config, ...rest);
      window.__pcConfigs.push(config === undefined ? null : JSON.parse(JSON.stringify(config)));
      window.__pcs.push(this);
    }
  };
})();
"""
PEER_STATS_JS = """
async () => {
  const out = {configs: window.__pcConfigs || [], local: [], remote: [], pairs: []};
  for (const pc of window.__pcs || []) {
    const stats = await pc.getStats();
    const byId = {};
    stats.forEach(s => { byId[s.id] = s; });
    stats.forEach(s => {
      if (s.type === "local-candidate") out.local.push(s.address || s.ip || "");
      if (s.type === "remote-candidate") out.remote.push(s.address || s.ip || "");
      if (s.type === "candidate-pair" && (s.requestsSent > 0 || s.state === "succeeded"))
        out.pairs.push([byId[s.localCandidateId]?.address, byId[s.remoteCandidateId]?.address, s.state]);
    });
  }
  return out;
}
"""
PROCESSED_JS = r"() => Number((document.body.innerText.match(/Processed (\d+) frames/) || [0, 0])[1])"


def start_app(workdir: Path, models_dir: Path, outside_log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "PICMETRIC_DATA_DIR": str(workdir / "data"),
        "PICMETRIC_MODELS_DIR": str(models_dir),
        "PICMETRIC_TEST_OUTSIDE_LOG": str(outside_log),
        "PICMETRIC_TEST_LIVE_THREADS": str(workdir / "live_threads.txt"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR", "PICMETRIC_ICE_SERVERS"):
        env.pop(name, None)
    log = (workdir / "streamlit.log").open("wb")
    command = [sys.executable, "-m", "tests.support.live_app", "run", "streamlit_app.py", "--server.headless", "true"]
    command += ["--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError((workdir / "streamlit.log").read_text()[-3000:])
        try:
            if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok":
                return process, base
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("streamlit did not become healthy")
        time.sleep(0.3)


def live_workers(workdir: Path) -> int:
    """The app's live-stream worker threads alive now (see :mod:`tests.support.live_app`)."""
    return int((workdir / "live_threads.txt").read_text() or 0)


def workers_gone_after(workdir: Path, seconds: float) -> tuple[int, float]:
    """The workers left and the seconds waited, once none is left or ``seconds`` have passed."""
    started = time.monotonic()
    while live_workers(workdir) and time.monotonic() - started < seconds:
        time.sleep(0.25)
    return live_workers(workdir), round(time.monotonic() - started, 2)


def stored_sources(workdir: Path) -> list[list[str]]:
    """(file name, source) of every stored analysis, read from the app's SQLite database."""
    with sqlite3.connect(workdir / "data" / "picmetric.db") as connection:
        return [list(row) for row in connection.execute("SELECT filename, source FROM analyses")]


def run(workdir: Path, models_dir: Path) -> dict:
    from playwright.sync_api import expect, sync_playwright

    clip = write_y4m(workdir / "dog.y4m", dog_rgb(640, 480), frames=30, fps=15)
    outside_log = workdir / "outside.log"
    outside_log.write_text("")
    process, base = start_app(workdir, models_dir, outside_log)
    report: dict = {"interfaces": subprocess.run(["ip", "-brief", "addr"], capture_output=True, text=True).stdout}
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip.resolve()}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
            context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
            keep_on_loopback(context)
            context.add_init_script(RECORD_PEERS_JS)
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"{base}/Live")
            wait_for_models(page, 300_000)
            expect(page.get_by_text("Press START")).to_be_visible()
            component = page.frame_locator("iframe[title*='webrtc']")
            component.get_by_role("button", name=re.compile("start", re.I)).click()
            try:
                page.wait_for_function(f"({PROCESSED_JS})() >= {WANTED_FRAMES}", timeout=180_000, polling=500)
            except Exception:
                page.screenshot(path=workdir / "failed.png", full_page=True)
                raise
            report["processed_shown"] = page.evaluate(PROCESSED_JS)
            report["readout"] = page.locator("text=/Processed \\d+ frames/").first.inner_text()
            report["workers_streaming"] = live_workers(workdir)
            frame = page.locator("iframe[title*='webrtc']").element_handle().content_frame()
            report["peer"] = frame.evaluate(PEER_STATS_JS)
            report["video"] = frame.evaluate(
                "() => { const v = document.querySelector('video'); return v && [v.videoWidth, v.videoHeight]; }"
            )
            other = context.new_page()  # another page of the app, while the stream runs
            started = time.monotonic()
            other.goto(f"{base}/History")
            wait_for_run(other, 120_000)
            report["history_while_streaming_s"] = round(time.monotonic() - started, 2)
            report["history_title"] = other.title()
            other.close()
            time.sleep(1.5)  # the caption's first classification and a fresh readout
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            report["screenshots"] = [str(SCREENSHOTS / "live_1440_light.png")]
            page.screenshot(path=report["screenshots"][-1], full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            time.sleep(1.5)
            report["screenshots"].append(str(snapshot(page, "live_390_light.png")))
            page.set_viewport_size({"width": 1440, "height": 900})
            page.emulate_media(color_scheme="dark")
            time.sleep(1.5)
            report["screenshots"].append(str(SCREENSHOTS / "live_1440_dark.png"))
            page.screenshot(path=report["screenshots"][-1], full_page=True)
            page.emulate_media(color_scheme="light")

            page.get_by_role("button", name="Snapshot").click()
            expect(page.get_by_role("heading", name="Snapshot")).to_be_visible(timeout=120_000)
            wait_for_run(page, 120_000)
            report["snapshot_text"] = page.locator("[data-testid='stMain']").inner_text()[-3000:]
            report["screenshots"].append(str(snapshot(page, "live_1440_snapshot.png")))

            component.get_by_role("button", name=re.compile("stop", re.I)).click()
            report["workers_after_stop"] = workers_gone_after(workdir, seconds=10)
            report["outside_requests"] = list(outside_requests)
            browser.close()
    finally:
        stop_process(process)
        report["stored"] = stored_sources(workdir)
        report["outside_ice"] = [line for line in outside_log.read_text().splitlines() if line]
        report["app_log_tail"] = (workdir / "streamlit.log").read_text(errors="replace")[-2000:]
    return report


def main() -> None:
    workdir, models_dir = Path(sys.argv[1]), Path(sys.argv[2])
    report = run(workdir, models_dir)
    (workdir / "live.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
