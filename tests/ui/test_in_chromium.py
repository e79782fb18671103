"""End to end in real Chromium: the real Streamlit server, a real photo, a URL from a loopback server.

Screenshots go to ``artifacts/screenshots/`` (gitignored).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.support.browser import (
    FIRST_SEEN_JS,
    MAIN,
    RESULT,
    SCREENSHOTS,
    UPLOAD_INPUT,
    chromium,
    new_page,
    outside_requests,
    photo_640x480,
    snapshot,
    streamlit_server,
    wait_for_models,
    wait_for_result,
    wait_for_run,
)
from tests.support.photos import darknet_photo

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


@pytest.fixture(autouse=True)
def nothing_leaves_the_machine() -> Iterator[None]:
    """The app must work offline and tell no outside host who uses it: fonts, icons, telemetry included."""
    outside_requests.clear()
    yield
    assert not outside_requests, f"the page asked hosts outside this machine for: {outside_requests}"


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


def settled_rows(page, buttons, timeout_s: float = 15.0) -> set[int]:
    """The rows (top y) the buttons sit in once their thumbnails have loaded and the layout stopped moving."""
    deadline = time.monotonic() + timeout_s
    rows: set[int] = set()
    while time.monotonic() < deadline:
        rows = {round(button.bounding_box()["y"]) for button in buttons}
        if len(rows) == 1:
            return rows
        page.wait_for_timeout(250)
    return rows


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_a_sample_photo_analyses_with_one_click_and_nothing_overflows(server, browser, viewport, theme):
    from playwright.sync_api import expect

    page = new_page(browser, viewport, theme)
    page.goto(server)
    samples = [page.get_by_role("button", name=name) for name in ("Astronaut", "Cat", "Coffee")]
    expect(samples[-1]).to_be_visible(timeout=30_000)  # the first page of a server whose networks are loading
    rows = settled_rows(page, samples)
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
