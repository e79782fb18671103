"""End to end in real Chromium: the real Streamlit server, a real photo, a URL from a loopback server.

Screenshots go to ``artifacts/screenshots/`` (gitignored).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image

from picmetric_core.config import get_settings
from picmetric_ui.upload_limit import upload_limit_mb
from tests.conftest import darknet_photo

ROOT = Path(__file__).resolve().parent.parent
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

# Visible elements whose own text reaches past their container or the viewport (plotly's SVG text included).
OVERFLOWING_TEXT_JS = """
() => {
  const out = [];
  const width = document.documentElement.clientWidth;
  const own = e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  const visible = r => r.width > 0 && r.height > 0;
  for (const e of document.querySelectorAll("[data-testid='stMain'] *, [data-testid='stSidebar'] *")) {
    if (!own(e) || e.closest("[data-testid='stDataFrame'], .hoverlayer, [data-testid='stTooltipContent']")) continue;
    const r = e.getBoundingClientRect();
    if (!visible(r) || r.right <= 0 || r.left >= width) continue;  // e.g. inside the collapsed sidebar
    const box = e.closest("svg.main-svg") || e.parentElement.closest("div, p, button, label, li, td");
    const b = box ? box.getBoundingClientRect() : {left: 0, right: width};
    const cut = e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflow !== "visible";
    if (r.right > Math.min(b.right, width) + 2 || r.left < Math.max(b.left, 0) - 2 || cut)
      out.push(`${e.tagName}: "${e.textContent.trim().slice(0, 60)}" ${Math.round(r.left)}..${Math.round(r.right)}`
               + ` in ${Math.round(b.left)}..${Math.round(b.right)}`);
  }
  return out;
}
"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("browser-data")
    models_dir = tmp_path_factory.mktemp("browser-models")
    with streamlit_server(data_dir, models_dir) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        yield browser


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


@pytest.fixture(autouse=True)
def nothing_leaves_the_machine() -> Iterator[None]:
    """The app must work offline and tell no outside host who uses it: fonts, icons, telemetry included."""
    outside_requests.clear()
    yield
    assert not outside_requests, f"the page asked hosts outside this machine for: {outside_requests}"


def new_page(browser, viewport: str = "desktop", theme: str = "light"):
    context = browser.new_context(viewport=VIEWPORTS[viewport], color_scheme=theme)
    keep_on_loopback(context)
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


@pytest.fixture(scope="module")
def page(server, browser):
    page = new_page(browser)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return photo_640x480(tmp_path_factory.mktemp("photos") / "dog640.jpg")


@pytest.fixture(scope="module")
def image_server(tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("served")
    (folder / "horses.jpg").write_bytes(darknet_photo("horses.jpg").read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_upload_a_photo_shows_overlays_and_charts(server, page, photo):
    from playwright.sync_api import expect

    page.goto(server)
    wait_for_models(page)
    page.locator(UPLOAD_INPUT).set_input_files(str(photo))
    wait_for_result(page)
    expect(page.locator(MAIN).get_by_text("dog #1", exact=True).first).to_be_visible()
    snapshot(page, "analyze.png")

    # Warm, same session: a second new photo, timed from upload to rendered results.
    second = photo_640x480(photo.with_name("dog640-b.jpg"), tint=7)
    started = time.perf_counter()
    page.locator(UPLOAD_INPUT).set_input_files(str(second))
    wait_for_result(page, images=4)
    print(f"\nwarm upload → results rendered: {time.perf_counter() - started:.2f} s")


def test_hovering_a_box_shows_its_label(server, page, photo):
    from playwright.sync_api import expect

    page.goto(server)
    page.locator(UPLOAD_INPUT).set_input_files(str(photo))  # seen before: the stored result
    wait_for_result(page)
    page.get_by_text("Interactive view", exact=False).first.click()
    figure = page.locator(f"{RESULT} [data-testid='stPlotlyChart']").filter(has=page.locator("path.js-fill")).first
    expect(figure).to_be_visible()
    fill = figure.locator("path.js-fill").first  # the most confident box's outline, drawn first
    hover = figure.locator(".hoverlayer .hovertext")
    for _ in range(3):  # the expander may still be opening (the figure moving) at the first move
        box = fill.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        try:
            expect(hover.first).to_be_visible(timeout=5_000)
            break
        except AssertionError:
            page.mouse.move(0, 0)
    expect(hover.first).to_be_visible()
    expect(hover.first).to_contain_text(re.compile(r"(dog|bicycle|truck|car) \d+%"))
    snapshot(page, "interactive-hover.png")


def test_downloads_give_the_overlay_png_and_the_json_of_the_photo(server, page, photo):
    from playwright.sync_api import expect

    page.goto(server)
    page.locator(UPLOAD_INPUT).set_input_files(str(photo))  # seen before: the stored result
    wait_for_result(page)
    page.locator(RESULT).get_by_text("Downloads and timings").first.click()
    png_button = page.locator(RESULT).get_by_role("button", name="Objects overlay (PNG)").first
    expect(png_button).to_be_visible()  # built once the expander is open
    with page.expect_download() as png_download:
        png_button.click()
    overlay = Image.open(png_download.value.path())
    assert (overlay.format, overlay.size) == ("PNG", (640, 480))
    with page.expect_download() as json_download:
        page.locator(RESULT).get_by_role("button", name="Full JSON").first.click()
    document = json.loads(Path(json_download.value.path()).read_text())
    assert document["md5"] == hashlib.md5(photo.read_bytes()).hexdigest()
    assert "dog" in {d["label"] for d in document["shown"]["detections"]}


def test_each_upload_shows_as_soon_as_it_is_done(server, browser, tmp_path):
    from playwright.sync_api import expect

    page = new_page(browser)
    page.goto(server)
    wait_for_models(page)
    photos = [
        photo_640x480(tmp_path / f"batch{i}.jpg", source, tint=40 + i)
        for i, source in enumerate(("dog.jpg", "person.jpg", "horses.jpg"))
    ]
    page.evaluate(FIRST_SEEN_JS, [f".st-key-result-{i} [data-testid='stImage'] img" for i in (0, 2)])
    page.locator(UPLOAD_INPUT).set_input_files([str(p) for p in photos])
    wait_for_result(page, images=2, scope=".st-key-result-2")
    first_shown, last_shown = page.evaluate("window.__firstSeen")
    print(f"\nthree uploads: first shown {first_shown / 1000:.2f} s, last {last_shown / 1000:.2f} s")
    # Shown together (a frame or two apart) would mean the first waited for the rest; two analyses lie between.
    assert last_shown - first_shown > 100, "the first result waited for the whole batch"
    expect(page.locator(".st-key-result-0 [data-testid='stImage'] img").first).to_be_visible()
    page.context.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_a_sample_photo_analyses_with_one_click_and_nothing_overflows(server, browser, viewport, theme):
    from playwright.sync_api import expect

    page = new_page(browser, viewport, theme)
    page.goto(server)
    samples = [page.get_by_role("button", name=name) for name in ("Astronaut", "Cat", "Coffee")]
    expect(samples[-1]).to_be_visible()
    rows = {round(button.bounding_box()["y"]) for button in samples}
    assert len(rows) == 1, f"the sample photos are not in one row at {viewport} width: {rows}"
    samples[0].click()
    expect(page.locator(MAIN).get_by_role("heading", name="astronaut.png")).to_be_visible()
    wait_for_result(page)
    page.get_by_role("button", name="Thresholds").click()  # the sliders sit next to the results, on a phone too
    expect(page.get_by_text("Detection confidence")).to_be_visible(timeout=30_000)  # popovers render lazily
    page.keyboard.press("Escape")
    background = page.evaluate("getComputedStyle(document.querySelector('.stApp')).backgroundColor")
    assert (background == "rgb(255, 255, 255)") == (theme == "light"), background
    overflowing = page.evaluate(OVERFLOWING_TEXT_JS)
    snapshot(page, f"sample-{viewport}-{theme}.png")
    page.goto(f"{server}/History")
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.locator(MAIN).get_by_text("astronaut.png", exact=True).first).to_be_visible()
    expect(page.get_by_text("Analyses per day")).to_be_visible()
    wait_for_run(page)
    page.wait_for_selector("[data-testid='stSkeleton']", state="detached")
    overflowing += page.evaluate(OVERFLOWING_TEXT_JS)
    snapshot(page, f"history-{viewport}-{theme}.png")
    page.context.close()
    assert overflowing == [], "\n".join(overflowing)


def test_history_finds_the_photo_by_label(server, page, photo):
    from playwright.sync_api import expect

    page.goto(f"{server}/History")
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.locator(MAIN).get_by_text("dog640.jpg", exact=True)).to_be_visible()
    summary = page.locator(MAIN).get_by_text(re.compile(r"Page \d+ of \d+ · \d+ analyses"))
    expect(summary).to_have_text([re.compile(r"Page 1 of 1 · \d+ analyses")])
    unfiltered = int(re.search(r"(\d+) analyses", summary.inner_text()).group(1))
    label = page.locator('[data-testid="stSelectbox"]').filter(has_text="Label")
    label.click()
    page.keyboard.type("dog")
    page.get_by_role("option", name="dog", exact=True).click()
    # While Streamlit reruns, the old caption can stay on the page beside the new one: wait for one, with a new count.
    expect(summary).to_have_text([re.compile(rf"Page 1 of 1 · (?!{unfiltered} )\d+ analyses")])
    expect(page.locator(MAIN).get_by_text("dog640.jpg", exact=True)).to_be_visible()
    expect(page.locator(MAIN).get_by_text("batch2.jpg", exact=True)).to_have_count(0)  # horses, no dog
    snapshot(page, "history.png")


def test_detail_view_opens_by_url(server, page, photo):
    from playwright.sync_api import expect

    md5 = hashlib.md5(photo.read_bytes()).hexdigest()
    page.goto(f"{server}/History?md5={md5}")
    expect(page.get_by_role("heading", name="dog640.jpg")).to_be_visible()
    wait_for_result(page, scope="[class*='st-key-detail-result']")
    expect(page.get_by_role("heading", name="More like this")).to_be_visible()
    snapshot(page, "detail.png")


def test_pasted_url_is_analysed(server, page, image_server):
    from playwright.sync_api import expect

    page.goto(server)
    wait_for_models(page)
    box = page.get_by_label("Image URLs, one per line")
    box.fill(f"{image_server}/horses.jpg\n{image_server}/missing.jpg")
    box.press("Control+Enter")
    wait_for_run(page)
    page.get_by_role("button", name="Analyze URLs").click()
    wait_for_result(page)
    expect(page.locator(MAIN).get_by_text("horse #1", exact=True).first).to_be_visible()
    expect(page.locator(f"{MAIN} [data-testid='stAlertContentError']")).to_have_count(1)
    snapshot(page, "url.png")
