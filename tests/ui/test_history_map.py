"""History → Map in real Chromium on the real Streamlit server: a lasso, a box and a click on the map list
exactly the photos inside them, hovering names a photo and shows its thumbnail (a tap too, on a phone), an
opened photo is ringed on the map, the gallery sorts and filters by uniqueness, and the page looks right at
laptop and phone width in both themes."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from picmetric_core.intake.images import thumbnail_jpeg
from picmetric_core.service import PicMetricService
from picmetric_core.store.database import session_factory
from picmetric_core.store.objects import ObjectKeys
from tests.support.api import NoNetworks
from tests.support.browser import (
    SCREENSHOTS,
    VIEWPORTS,
    chromium,
    keep_on_loopback,
    new_page,
    outside_requests,
    snapshot,
    streamlit_server,
    wait_for_run,
)
from tests.support.map_rows import add_photos, themed_vectors
from tests.support.photos import jpeg_bytes, skimage_photo
from tests.support.rows import md5_of
from tests.support.services import make_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]

THEMES = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket", "camera": "camera"}
PER_THEME = 10  # 50 photos: a UMAP map, and one theme fits on a gallery page
NAMES = [f"{theme}-{i}" for theme in THEMES for i in range(PER_THEME)] + ["outlier"]
MAP = "iframe[title='picmetric_ui.map_component.picmetric_map']"
WITHOUT_THUMBNAIL = "cat-0"  # its thumbnail is not stored: its tooltip has none
MARK_RGB = (0xF5, 0x9E, 0x0B)  # the ring round the opened photo

# Every point's file name and coordinates in the map's frame.
POINTS_JS = """
() => {
  const box = document.getElementById('overlay').getBoundingClientRect();
  const s = pmMap.state, out = [];
  for (let i = 0; i < s.pts.count; i++) {
    const p = pmMap.screenOf(i);
    out.push({i, name: pmMap.nameOf(i), x: box.left + p.x, y: box.top + p.y});
  }
  return out;
}
"""
# The tooltip's photo, and its thumbnail once loaded (null until then).
TIP_THUMB_JS = """
() => {
  const img = document.querySelector('#tip:not([hidden]) .thumb img');
  if (!img || !img.complete || img.naturalWidth === 0) return null;
  return {name: document.querySelector('#tip b').textContent, src: img.currentSrc,
          size: [img.naturalWidth, img.naturalHeight], shown: img.getBoundingClientRect().width};
}
"""
# The opened photo's name, and the colour of the overlay 11 px right of its point (the ring's radius).
RING_JS = """
() => {
  const s = pmMap.state, i = s.args.marked;
  if (i < 0 || !s.pts) return null;
  const p = pmMap.screenOf(i), canvas = document.getElementById('overlay');
  const d = s.dpr, pixel = canvas.getContext('2d').getImageData(Math.round((p.x + 11) * d), Math.round(p.y * d), 1, 1);
  return {name: pmMap.nameOf(i), rgba: [...pixel.data]};
}
"""


UNIQUENESS: dict[str, float] = {}  # each photo's uniqueness on the map, by md5, once the server is up
THUMBNAILS: dict[str, bytes] = {}  # each photo's stored thumbnail, by file name


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("map-browser-data")
    models_dir = tmp_path_factory.mktemp("map-browser-models")
    service = PicMetricService(make_settings(data_dir, models_dir=models_dir), NoNetworks())
    names = NAMES[:-1]
    with session_factory(service.engine).begin() as session:
        add_photos(session, names, themed_vectors(len(THEMES), PER_THEME), [n.split("-")[0] for n in names])
        add_photos(session, ["outlier"], themed_vectors(1, 1, seed=99), ["rocket"], first=len(names))
    for name in NAMES:
        rgb = skimage_photo(THEMES.get(name.split("-")[0], "page")).rgb
        keys = ObjectKeys.for_image(md5_of(name), "image/jpeg")
        service.store.put(keys.original, jpeg_bytes(rgb), "image/jpeg")
        if name != WITHOUT_THUMBNAIL:
            THUMBNAILS[f"{name}.jpg"] = thumbnail_jpeg(rgb)
            service.store.put(keys.thumbnail, THUMBNAILS[f"{name}.jpg"], "image/jpeg")
    assert service.fit_map().method == "umap"
    UNIQUENESS.update({p.md5: p.uniqueness for p in service.map_view().points})
    service.close()
    with streamlit_server(data_dir, models_dir) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        yield browser


@pytest.fixture(autouse=True)
def nothing_leaves_the_machine() -> Iterator[None]:
    outside_requests.clear()
    yield
    assert not outside_requests, f"the page asked hosts outside this machine for: {outside_requests}"


def open_map(browser, server: str, viewport: str = "desktop", theme: str = "light"):
    page = new_page(browser, viewport, theme)
    page.goto(f"{server}/History")
    wait_for_run(page)
    page.get_by_text("Map", exact=True).click()
    wait_for_run(page)
    drawn_map(page)
    page.locator(MAP).first.scroll_into_view_if_needed()  # the mouse cannot draw below the window's edge
    return page


def click_until_gone(page, text: str, tries: int = 3) -> None:
    """Clicks ``text`` until it leaves the page: a click that lands while the page reruns (the models
    arriving rerun it) can be lost."""
    for _ in range(tries):
        page.get_by_text(text).first.click()
        wait_for_run(page)
        try:
            page.get_by_text(text).first.wait_for(state="detached", timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"{text!r} stayed on the page after {tries} clicks")


def map_frame(page, nth: int = 0):
    return page.locator(MAP).nth(nth).element_handle().content_frame()


def drawn_map(page, nth: int = 0):
    """The map's frame once its points are painted."""
    frame = map_frame(page, nth)
    frame.wait_for_function("() => window.pmMap && pmMap.state.paintedPoints > 0", polling=100)
    return frame


def map_points(page, frame) -> list[dict]:
    """Every point's file name and page coordinates (the frame's own plus the frame's place; it has no border)."""
    box = page.locator(MAP).first.bounding_box()
    return [{**p, "x": box["x"] + p["x"], "y": box["y"] + p["y"]} for p in frame.evaluate(POINTS_JS)]


def lasso(page, left: float, top: float, right: float, bottom: float) -> None:
    """A lasso drawn round the rectangle, with the mouse."""
    page.mouse.move(left, top)
    page.mouse.down()
    for x, y in ((right, top), (right, bottom), (left, bottom), (left, top + 1)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def box(page, left: float, top: float, right: float, bottom: float) -> None:
    """A box dragged from one corner of the rectangle to the other."""
    page.mouse.move(left, top)
    page.mouse.down()
    page.mouse.move(right, bottom, steps=12)
    page.mouse.up()


def round_theme(points: list[dict], theme: str) -> tuple[float, float, float, float]:
    """A rectangle round every point of ``theme``, 6 px wider each side."""
    own = [p for p in points if p["name"].startswith(f"{theme}-")]
    return (
        min(p["x"] for p in own) - 6,
        min(p["y"] for p in own) - 6,
        max(p["x"] for p in own) + 6,
        max(p["y"] for p in own) + 6,
    )


def select_and_wait(page, act) -> None:
    """Runs ``act`` (a drag or a click on the map), then waits for the gallery to list the selection."""
    selected = page.get_by_text("selected on the map")
    act()
    try:
        selected.wait_for(timeout=20_000)
    except PlaywrightTimeout:  # a drag that began while the page still reran
        wait_for_run(page)
        act()
        selected.wait_for()
    wait_for_run(page)


def gallery_names(page) -> set[str]:
    """The file names on the gallery's cards (each card names its photo in bold, plain text)."""
    texts = page.locator("[data-testid='stMain'] p.pm-plain").all_inner_texts()
    return {text.strip() for text in texts if text.strip().endswith(".jpg")}


def assert_gallery_lists(page, names: set[str]) -> None:
    expect(page.get_by_text(f"The gallery shows the {len(names)} photo")).to_have_count(1)
    expect(page.get_by_text(f"· {len(names)} analyses")).to_have_count(1)
    assert gallery_names(page) == names


def test_a_lasso_on_the_map_lists_exactly_the_photos_inside_it(browser, server):
    page = open_map(browser, server)
    frame = map_frame(page)
    points = map_points(page, frame)
    left, top, right, bottom = round_theme(points, "cat")
    inside = {p["name"] for p in points if left <= p["x"] <= right and top <= p["y"] <= bottom}
    assert top >= 0 and bottom <= page.viewport_size["height"], "the points to select lie outside the window"

    cat = next(p for p in points if p["name"] == "cat-3.jpg")
    page.mouse.move(cat["x"], cat["y"])  # hovering names the photo (or one drawn on the same spot)
    frame.wait_for_function("() => pmMap.state.hover >= 0", polling=100)
    hovered = frame.evaluate("() => pmMap.nameOf(pmMap.state.hover)")
    assert hovered.startswith("cat-")
    expect(page.frame_locator(MAP).locator("#tip")).to_contain_text(hovered)
    select_and_wait(page, lambda: lasso(page, left, top, right, bottom))

    assert inside >= {f"cat-{i}.jpg" for i in range(PER_THEME)}
    assert frame.evaluate("() => pmMap.state.selectedCount") == len(inside)
    assert_gallery_lists(page, inside)
    page.context.close()


def test_a_box_and_a_click_select_and_clear_undoes_them(browser, server):
    page = open_map(browser, server)
    frame = map_frame(page)
    points = map_points(page, frame)
    page.frame_locator(MAP).get_by_role("button", name="Box select").click()
    left, top, right, bottom = round_theme(points, "coffee")
    inside = {p["name"] for p in points if left <= p["x"] <= right and top <= p["y"] <= bottom}
    select_and_wait(page, lambda: box(page, left, top, right, bottom))
    assert inside >= {f"coffee-{i}.jpg" for i in range(PER_THEME)}
    assert_gallery_lists(page, inside)

    outlier = next(p for p in points if p["name"] == "outlier.jpg")
    page.mouse.click(outlier["x"], outlier["y"])
    expect(page.get_by_text("The gallery shows the 1 photo selected on the map")).to_be_visible()
    wait_for_run(page)
    assert gallery_names(page) == {"outlier.jpg"}

    page.get_by_role("button", name="Clear the selection").click()
    expect(page.get_by_text("selected on the map")).to_have_count(0)
    wait_for_run(page)
    expect(page.get_by_text(f"· {len(NAMES)} analyses")).to_have_count(1)
    frame.wait_for_function("() => pmMap.state.selectedCount === 0 && pmMap.state.shape === null", polling=100)
    page.context.close()


def pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def assert_tip_shows_its_thumbnail(page, frame) -> str:
    """The tooltip shows the stored thumbnail of the photo it names (the served file, byte for byte and pixel for
    pixel); returns that photo's file name."""
    frame.wait_for_function(TIP_THUMB_JS, polling=100, timeout=20_000)
    shown = frame.evaluate(TIP_THUMB_JS)
    served = page.request.get(shown["src"])
    assert served.ok and served.headers["content-type"] == "image/jpeg"
    stored = THUMBNAILS[shown["name"]]
    assert served.body() == stored
    assert np.array_equal(pixels(served.body()), pixels(stored))
    assert tuple(shown["size"]) == Image.open(io.BytesIO(stored)).size and shown["shown"] > 100
    assert re.search(r"/thumb-[0-9a-f]{40}\.jpg$", shown["src"]), shown["src"]  # a capability name, as the data's
    return shown["name"]


def test_hovering_a_point_shows_its_thumbnail(browser, server):
    page = open_map(browser, server)
    frame = map_frame(page)
    points = map_points(page, frame)
    painted = frame.evaluate("() => pmMap.state.paintedAt")
    coffee = next(p for p in points if p["name"] == "coffee-4.jpg")
    page.mouse.move(coffee["x"], coffee["y"])

    name = assert_tip_shows_its_thumbnail(page, frame)
    assert name.startswith("coffee-")  # (or another photo drawn on the same spot)
    assert frame.evaluate("() => pmMap.state.paintedAt") == painted, "the thumbnail's arrival redrew the points"
    expect(page.get_by_text("selected on the map")).to_have_count(0)  # a hover selects nothing

    plain = next(p for p in points if p["name"] == f"{WITHOUT_THUMBNAIL}.jpg")
    page.mouse.move(plain["x"], plain["y"])
    frame.wait_for_function("() => pmMap.state.thumbs.has(pmMap.state.tipIndex)", polling=100, timeout=20_000)
    tip = page.frame_locator(MAP).locator("#tip")
    expect(tip).to_contain_text(f"{WITHOUT_THUMBNAIL}.jpg")
    expect(tip.locator(".thumb")).to_have_count(0)  # a photo without a thumbnail: the tooltip simply has none

    sent = frame.evaluate("() => pmMap.state.sent")
    page.mouse.move(coffee["x"], coffee["y"])  # back on a point: its thumbnail is known, shown without asking
    assert_tip_shows_its_thumbnail(page, frame)
    page.wait_for_timeout(500)
    assert frame.evaluate("() => pmMap.state.sent") == sent
    page.context.close()


def test_a_tap_on_a_phone_shows_the_thumbnail_and_lists_the_photo(browser, server):
    context = browser.new_context(viewport=VIEWPORTS["phone"], has_touch=True, is_mobile=True)
    keep_on_loopback(context)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{server}/History")
    wait_for_run(page)
    page.get_by_text("Map", exact=True).click()
    wait_for_run(page)
    frame = drawn_map(page)
    page.locator(MAP).first.scroll_into_view_if_needed()
    point = next(p for p in map_points(page, frame) if p["name"] == "astronaut-2.jpg")

    select_and_wait(page, lambda: page.touchscreen.tap(point["x"], point["y"]))
    name = assert_tip_shows_its_thumbnail(page, frame)
    assert name.startswith("astronaut-")
    expect(page.get_by_text("The gallery shows the 1 photo selected on the map")).to_be_visible()
    assert gallery_names(page) == {name}
    context.close()


def is_ring(rgba: list[int]) -> bool:
    return rgba[3] > 200 and all(abs(a - b) < 40 for a, b in zip(rgba, MARK_RGB, strict=False))


def test_an_opened_photo_is_ringed_on_the_map(browser, server):
    page = open_map(browser, server)
    page.locator("[data-testid='stMain'] button:has-text('Open')").first.click()
    page.get_by_text("On the map").click()
    wait_for_run(page)
    frame = drawn_map(page)
    md5 = page.evaluate("() => new URLSearchParams(location.search).get('md5')")
    opened = {md5_of(name): f"{name}.jpg" for name in NAMES}[md5]

    ring = frame.evaluate(RING_JS)
    assert ring["name"] == opened and is_ring(ring["rgba"]), ring
    click_until_gone(page, "Back to the gallery")
    frame = drawn_map(page)
    ring = frame.evaluate(RING_JS)
    assert ring["name"] == opened and is_ring(ring["rgba"]), ring
    page.context.close()


def card_names(page) -> list[str]:
    """The gallery's file names, card by card."""
    texts = page.locator("[data-testid='stMain'] p.pm-plain").all_inner_texts()
    return [text.strip() for text in texts if text.strip().endswith(".jpg")]


def choose(page, box_label: str, option: str) -> None:
    """Picks ``option`` in the selectbox labelled ``box_label``, opening it again when its list did not show
    (once in CI the first click opened nothing within 60 s while the page was still settling)."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=box_label)
    choice = page.get_by_role("option", name=option, exact=True)
    for _ in range(3):
        box.click()
        try:
            choice.wait_for(timeout=10_000)
            break
        except PlaywrightTimeout:
            continue
    choice.click()


def test_most_unique_first_opens_the_gallery_on_the_outlier(browser, server):
    page = new_page(browser)
    page.goto(f"{server}/History")
    wait_for_run(page)
    choose(page, "Sort", "Most unique first")
    expect(page.get_by_role("button", name="Next")).to_be_visible()
    wait_for_run(page)

    most_unique = sorted(UNIQUENESS, key=UNIQUENESS.__getitem__, reverse=True)
    names = {md5_of(name): f"{name}.jpg" for name in NAMES}
    assert card_names(page) == [names[md5] for md5 in most_unique[:12]]
    assert card_names(page)[0] == "outlier.jpg"
    expect(page.get_by_text(f"uniqueness {UNIQUENESS[md5_of('outlier')]:.2f}")).to_be_visible()
    page.context.close()


def test_a_uniqueness_range_keeps_exactly_the_photos_in_it(browser, server):
    page = new_page(browser)
    page.goto(f"{server}/History")
    wait_for_run(page)
    steps = int(max(UNIQUENESS.values()) * 100)  # the slider's 0.01 steps up to the outlier's uniqueness
    expected = [f"{name}.jpg" for name in NAMES if UNIQUENESS[md5_of(name)] >= steps / 100]
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Uniqueness").get_by_role("slider").first
    thumb.focus()
    for _ in range(steps):
        page.keyboard.press("ArrowRight")
    summary = page.locator("[data-testid='stMain']").get_by_text(re.compile(r"Page \d+ of \d+ · \d+ analyses"))
    expect(summary).to_have_text([re.compile(rf"· {len(expected)} analyses")])
    wait_for_run(page)

    assert sorted(card_names(page)) == sorted(expected) and "outlier.jpg" in expected
    assert page.get_by_text("picked to compare").count() == 0  # reruns cut short by the steps pick nothing
    page.context.close()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_map_at_laptop_and_phone_width(browser, server, viewport, theme):
    page = open_map(browser, server, viewport, theme)
    frame = map_frame(page)
    rocket = next(p for p in map_points(page, frame) if p["name"] == "rocket-5.jpg")
    page.mouse.move(rocket["x"], rocket["y"])  # the screenshot shows a tooltip with its thumbnail
    assert_tip_shows_its_thumbnail(page, frame)
    width = page.evaluate(f'() => document.querySelector("{MAP}").getBoundingClientRect().width')
    main = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollWidth")
    drawn = map_frame(page).evaluate(
        "() => ({W: pmMap.state.W, dark: pmMap.state.dark, painted: pmMap.state.paintedPoints})"
    )

    snapshot(page, f"history-map-{viewport}-{theme}.png")
    assert 0 < width <= main <= page.viewport_size["width"]
    assert drawn == {"W": width - 2, "dark": theme == "dark", "painted": len(NAMES)}  # the canvas fills its frame
    page.context.close()
