"""Real Chromium on the real Streamlit server, for the browser tests and ``bench/ui_bench.py``.

The server on a free loopback port, the browser, the page's selectors and waits, and a guard that keeps
every request on this machine.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from picmetric_core.config import get_settings
from picmetric_ui.upload_limit import upload_limit_mb
from tests.support.photos import darknet_photo

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
UPLOAD_INPUT = '[data-testid="stFileUploaderDropzone"] input[type="file"]'
MAIN = '[data-testid="stMain"]'
RESULT = "[class*='st-key-result-']"  # one keyed container per image on the Analyze page
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(data_dir: Path, models_dir: Path, timeout: float = 90) -> Iterator[str]:
    """``streamlit run streamlit_app.py`` on a free loopback port; yields its base URL, stops it by PID."""
    port = free_port()
    env = {
        **os.environ,
        "PICMETRIC_DATA_DIR": str(data_dir),
        "PICMETRIC_MODELS_DIR": str(models_dir),
        "PICMETRIC_ALLOW_PRIVATE_URLS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR"):
        env.pop(name, None)
    log = open(data_dir / "streamlit.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            "--server.maxUploadSize",
            str(upload_limit_mb(get_settings())),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited: {(data_dir / 'streamlit.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("streamlit did not become healthy")
            time.sleep(0.3)
        yield base
    finally:
        stop_process(process)
        log.close()


def stop_process(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not ended within ``grace_s``."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# Records, every animation frame, when each selector first matched (ms from the call) in window.__firstSeen.
FIRST_SEEN_JS = """
(selectors) => {
  const started = performance.now();
  window.__firstSeen = selectors.map(() => null);
  const look = () => {
    selectors.forEach((selector, i) => {
      if (window.__firstSeen[i] === null && document.querySelector(selector))
        window.__firstSeen[i] = performance.now() - started;
    });
    if (window.__firstSeen.includes(null)) requestAnimationFrame(look);
  };
  requestAnimationFrame(look);
}
"""


def wait_for_models(page, timeout_ms: int = 120_000) -> None:
    """The sidebar's Models panel shows the backend once the warm-up has finished."""
    from playwright.sync_api import expect

    expect(page.locator('[data-testid="stSidebar"]').get_by_text("Backend").first).to_be_visible(timeout=timeout_ms)
    wait_for_run(page, timeout_ms)


# True once ``n`` result pictures in ``scope`` have loaded, a chart is drawn there and the rerun has finished.
RESULT_DRAWN_JS = """
([scope, n]) => {
  const images = [...document.querySelectorAll(scope + " [data-testid='stImage'] img")];
  const chart = document.querySelector(scope + " [data-testid='stPlotlyChart'] .main-svg");
  return images.length >= n && images.every(i => i.complete && i.naturalWidth > 0)
    && chart !== null && chart.getBoundingClientRect().width > 0
    && document.querySelector("[data-testid='stApp']").dataset.testScriptState === "notRunning";
}
"""
SCRIPT_DONE_JS = "() => document.querySelector(\"[data-testid='stApp']\")?.dataset.testScriptState === 'notRunning'"


def wait_for_run(page, timeout_ms: int = 60_000) -> None:
    """The page's script run has finished (Streamlit's own state on the app's root, read every frame)."""
    page.wait_for_function(SCRIPT_DONE_JS, timeout=timeout_ms, polling="raf")


def wait_for_result(page, images: int = 2, timeout_ms: int = 60_000, scope: str = RESULT) -> None:
    """``images`` result pictures loaded (the original and an overlay per network that found something),
    the charts drawn, and the rerun finished.

    One check on every animation frame: ``expect``'s retries back off to a second apart, which would
    add up to a second to the timings that ``bench/ui_bench.py`` reads from this.
    """
    from playwright.sync_api import expect

    page.wait_for_function(RESULT_DRAWN_JS, arg=[scope, images], timeout=timeout_ms, polling="raf")
    expect(page.locator(f"{scope} [data-testid='stImage'] img")).to_have_count(images)


def snapshot(page, name: str) -> Path:
    """A screenshot of the whole page (Streamlit scrolls inside its main block, so grow the viewport)."""
    height = page.evaluate("document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 6000))})
    page.wait_for_timeout(300)
    path = SCREENSHOTS / name
    page.screenshot(path=path, full_page=True)
    page.set_viewport_size(size)
    return path


def photo_640x480(path: Path, source: str = "dog.jpg", tint: int = 0) -> Path:
    """A 640×480 JPEG made from a darknet photo; each ``tint`` gives it a new md5 (a 16×16 corner square
    of its own colour: one changed pixel can vanish in the JPEG and leave the bytes as they were)."""
    image = Image.open(darknet_photo(source)).convert("RGB").resize((640, 480))
    if tint:
        image.paste((tint % 256, tint * 7 % 256, tint * 13 % 256), (0, 0, 16, 16))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return path


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
outside_requests: list[str] = []
"""What a page asked of hosts other than this machine (aborted): a test fails when this is not empty."""


def keep_on_loopback(context) -> None:
    """Abort every request of ``context`` that would leave the machine, and remember it."""

    def route(route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            outside_requests.append(route.request.url)
            route.abort()

    context.route("**/*", route)


def new_page(browser, viewport: str = "desktop", theme: str = "light"):
    context = browser.new_context(viewport=VIEWPORTS[viewport], color_scheme=theme)
    keep_on_loopback(context)
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page
