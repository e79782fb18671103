"""The Video page and History's video cards.

Headless (``AppTest``, no networks): the page's intake and a clip that is not a video. In real Chromium,
on the real Streamlit server with the real networks: a clip made here from a darknet photo sliding across
the frame is uploaded, a counting line is clicked on its poster, and the analysis ends in an annotated clip
that plays, a track of the dog, downloads, and a card in History.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.support.api import NoNetworks
from tests.support.browser import (
    MAIN,
    SCREENSHOTS,
    UPLOAD_INPUT,
    chromium,
    new_page,
    outside_requests,
    snapshot,
    streamlit_server,
    wait_for_run,
)
from tests.support.photos import darknet_photo

ROOT = Path(__file__).resolve().parents[2]
CLIP_SIZE = (960, 540)
CLIP_SECONDS = 3.0
CLIP_FPS = 10
PICKER = "iframe[title='streamlit_image_coordinates.streamlit_image_coordinates']"
ANALYSIS_TIMEOUT_MS = 240_000


def moving_photo_clip(path: Path, source: str = "dog.jpg") -> Path:
    """An H.264 MP4: the darknet photo (640×480) sliding left to right across a grey 960×540 frame."""
    photo = Image.open(darknet_photo(source)).convert("RGB").resize((640, 480))
    frames = round(CLIP_SECONDS * CLIP_FPS)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=CLIP_FPS)
        stream.width, stream.height, stream.pix_fmt = *CLIP_SIZE, "yuv420p"
        for index in range(frames):
            canvas = Image.new("RGB", CLIP_SIZE, (120, 130, 140))
            canvas.paste(photo, (round(index * (CLIP_SIZE[0] - photo.width) / (frames - 1)), 30))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(canvas), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def video_page(tmp_path_factory, empty_models_dir) -> Iterator[Path]:
    """The app's settings on a fresh data folder, with stand-in networks behind the page (probing a clip
    needs none)."""
    from picmetric_core.config import get_settings
    from picmetric_core.lifecycle import ModelLoader
    from picmetric_ui import resources

    data_dir = tmp_path_factory.mktemp("video-page")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PICMETRIC_DATA_DIR", str(data_dir))
        patch.setenv("PICMETRIC_MODELS_DIR", str(empty_models_dir))
        for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR", "PICMETRIC_APP_PASSWORD"):
            patch.delenv(name, raising=False)
        patch.setattr(resources, "_loader", lambda current: ModelLoader(current, load=lambda _: NoNetworks()))
        get_settings.cache_clear()
        yield data_dir
        get_settings.cache_clear()


def open_video(**query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/4_Video.py")
    for name, value in query.items():
        at.query_params[name] = value
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


@pytest.mark.slow  # the sidebar's Models panel loads the offline networks (once a session)
def test_the_page_takes_clips_refuses_what_is_not_one_and_says_when_an_id_is_unknown(video_page) -> None:
    """One headless session, run three times (each first run of the page costs the most)."""
    at = open_video()
    assert not at.exception, [e.value for e in at.exception]
    uploader = at.get("file_uploader")[0]
    assert {f".{kind}" for kind in ("mp4", "mov", "webm", "mkv", "avi")} <= set(uploader.proto.type)
    assert "Formats: MP4, MOV, WebM, MKV or AVI. Up to" in texts(at.caption)
    assert at.text_input(key="video_url").label == "Or a video URL"
    assert "Results appear here" in texts(at.info)
    assert [link.proto.label for link in at.get("page_link")][-1] == "Video"

    uploader.set_value(("holiday.mp4", b"this is no video at all" * 40, "video/mp4"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (error,) = at.error
    assert error.value and "Traceback" not in error.value and str(video_page) not in error.value
    assert not at.button  # nothing to analyse

    at.query_params["video"] = "0" * 32
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "No stored video" in texts(at.warning)
    assert not [button for button in at.button if button.label == "Delete"]  # nothing to delete


# --- real Chromium, real server, real networks ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, empty_models_dir) -> Iterator[str]:
    with streamlit_server(tmp_path_factory.mktemp("video-data"), empty_models_dir) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def page(server, browser):
    page = new_page(browser)
    yield page
    page.context.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return moving_photo_clip(tmp_path_factory.mktemp("clips") / "dog-crossing.mp4")


@pytest.fixture(autouse=True)
def nothing_leaves_the_machine() -> Iterator[None]:
    outside_requests.clear()
    yield
    assert not outside_requests, f"the page asked hosts outside this machine for: {outside_requests}"


def click_frame(page, x: float, y: float) -> None:
    """A click at (x, y), as fractions of the shown poster, then the rerun it starts."""
    image = page.frame_locator(PICKER).locator("img")
    box = image.bounding_box()
    image.click(position={"x": box["width"] * x, "y": box["height"] * y})
    page.wait_for_timeout(300)
    wait_for_run(page)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_an_uploaded_clip_is_analysed_with_a_counting_line(server, page, clip) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server}/Video")
    wait_for_run(page)
    page.locator(UPLOAD_INPUT).set_input_files(str(clip))
    expect(page.frame_locator(PICKER).locator("img")).to_be_visible()
    click_frame(page, 0.5, 0.1)
    click_frame(page, 0.5, 0.9)
    expect(page.locator(MAIN).get_by_text("Counting line from")).to_be_visible()
    page.get_by_role("button", name="Analyse", exact=True).click()

    player = page.locator(f"{MAIN} [data-testid='stVideo']")
    expect(player).to_be_visible(timeout=ANALYSIS_TIMEOUT_MS)
    wait_for_run(page)
    assert "video=" in page.url
    page.wait_for_function(
        "() => { const v = document.querySelector(\"[data-testid='stVideo']\");"
        " return v && v.error === null && v.readyState >= 1 && v.videoWidth > 0; }",
        timeout=30_000,
    )  # the annotated clip's H.264 plays in the browser
    expect(page.locator(MAIN).get_by_text("Tracks (", exact=False).first).to_be_visible()
    expect(page.locator(MAIN).get_by_text("dog", exact=False).first).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("button", name="Tracks (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert "dog" in {value for row in rows for value in row.values()}
    expect(page.get_by_role("button", name="Annotated clip (MP4)")).to_be_visible()

    bar = page.locator(f"{MAIN} g.trace.bars path").nth(10)  # the timeline: a click seeks the player there
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.up()
    expect(page.locator(MAIN).get_by_text(re.compile(r"^From 0:0[1-9]"))).to_be_visible()
    page.wait_for_function("() => document.querySelector(\"[data-testid='stVideo']\").currentTime > 1")
    snapshot(page, "video-result.png")


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_history_shows_the_clip_as_a_card_that_opens_it_and_delete_removes_it(server, page, clip) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server}/History")
    wait_for_run(page)
    card_name = page.locator(MAIN).get_by_text(clip.name, exact=True)
    expect(card_name).to_be_visible()
    for label, shown in (("dog", 1), ("zebra", 0)):  # History's label filter applies to the clips' tracks too
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Label").click()
        page.keyboard.type(label)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name=f"Videos showing {label}")).to_have_count(shown)
        expect(card_name).to_have_count(shown)
    page.goto(f"{server}/History")
    link = page.locator(f"{MAIN} .st-key-history-videos a").first
    expect(link).to_have_attribute("href", re.compile(r"Video\?video=[0-9a-f]+"))
    snapshot(page, "history-video.png")
    link.click()
    expect(page.locator(f"{MAIN} [data-testid='stVideo']")).to_be_visible()

    page.get_by_role("button", name="Delete", exact=True).click()  # the opened clip, after a confirmation
    page.get_by_role("dialog").get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator(MAIN).get_by_text(f"Deleted {clip.name}")).to_be_visible()
    page.goto(f"{server}/History")
    wait_for_run(page)
    expect(page.locator(MAIN).get_by_text(clip.name, exact=True)).to_have_count(0)
