"""The Analyze and History pages, run headless with AppTest against the real networks and a real store."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from picmetric_core.config import get_settings
from picmetric_core.history import HistoryQuery
from picmetric_core.intake.images import NOT_AN_IMAGE_MESSAGE
from picmetric_ui.samples import SAMPLES
from tests.support.photos import png_bytes

ROOT = Path(__file__).resolve().parents[2]
ANALYZE = str(ROOT / "streamlit_app.py")
HISTORY = str(ROOT / "pages" / "1_History.py")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_env(tmp_path_factory, empty_models_dir, analyzer) -> Iterator[Path]:
    """The app's settings point at a fresh data folder and the already-loaded offline models."""
    data_dir = tmp_path_factory.mktemp("app-data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PICMETRIC_DATA_DIR", str(data_dir))
        patch.setenv("PICMETRIC_MODELS_DIR", str(empty_models_dir))
        for name in ("DATABASE_URL", "S3_BUCKET", "PICMETRIC_STORE_DIR"):
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        from picmetric_ui import resources

        resources.warmup().done.wait(120)
        yield data_dir
    get_settings.cache_clear()


@pytest.fixture
def calls(analyzer, monkeypatch) -> list[str]:
    """Counts every run of the networks (the app's service reaches the same loaded analyzer)."""
    seen: list[str] = []
    real = type(analyzer).analyze

    def counting(image, on_stage=None):
        seen.append(image.md5)
        return real(analyzer, image, on_stage=on_stage)

    monkeypatch.setattr(analyzer, "analyze", counting)
    return seen


def run(path: str, **query: str) -> AppTest:
    # Every page is opened from the main script, as a browser would: page links resolve against it.
    at = AppTest.from_file(ANALYZE, default_timeout=120)
    if path != ANALYZE:
        at.switch_page(str(Path(path).relative_to(ROOT)))
    for name, value in query.items():
        at.query_params[name] = value
    return at.run()


def upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader(key="uploads").set_value(list(files) if len(files) > 1 else files[0])
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def open_details(at: AppTest, item: str = "item0") -> AppTest:
    """Open one image's interactive view, tables and downloads, as a viewer clicking each expander would
    (what they hold is built only while they are open)."""
    for part in ("interactive", "tables", "downloads"):
        at.session_state[f"{item}-{part}-open"] = True
    return at.run()


def result_charts(at: AppTest) -> list[str]:
    """The keys of the results' charts (the sidebar's hidden chart that preloads plotly left out)."""
    return [chart.key for chart in at.get("plotly_chart") if chart.key != "chart-preload-figure"]


def table(at: AppTest, index: int):
    return at.dataframe[index].value


def object_rows(at: AppTest) -> int:
    """How many objects the objects table lists (no table when none is shown)."""
    return next((len(d.value) for d in at.dataframe if "Object" in d.value.columns), 0)


def plain_texts(at: AppTest) -> str:
    """What the page shows through st.html (file names, headings, progress), as a browser would read it."""
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", "", e.proto.body)) for e in at.html)


def result_images(at: AppTest) -> list:
    """The results' images (the sample photos' thumbnails left out)."""
    return at.get("image")[len(SAMPLES) :]


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_analyze_page_starts_with_limits_and_models(app_env):
    at = run(ANALYZE)
    assert_no_exception(at)
    assert "Formats: JPEG, PNG, WebP, GIF, BMP or TIFF. Up to 20 MB" in texts(at.caption)
    sidebar = texts(at.sidebar.caption)
    assert "Backend" in sidebar
    models = texts(at.sidebar.markdown)
    for line in ("**Classifier:** EfficientNet-Lite2", "**Detector:** YOLOv3-tiny", "**Faces:** MTCNN"):
        assert line in models
    assert "offline stand-in" in models and "full weights" in models
    assert [link.proto.label for link in at.get("page_link")] == ["Analyze", "History", "Batches", "Live", "Video"]


def test_upload_shows_overlays_charts_tables_and_downloads(app_env, calls, dog_jpg):
    at = upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"))
    assert_no_exception(at)
    assert len(calls) == 1
    assert len(result_images(at)) == 2  # the original and the objects overlay: no faces, so no faces copy
    assert result_charts(at) == ["item0-classes", "item0-objects"]
    assert len(at.get("download_button")) == 0 and not at.dataframe  # in closed expanders: not built yet
    open_details(at)
    assert result_charts(at) == ["item0-classes", "item0-objects", "item0-interactive"]
    objects = table(at, 0)
    assert {"dog", "bicycle"} <= set(objects["Object"])
    assert list(objects.columns) == ["Object", "Confidence", "Left", "Top", "Right", "Bottom"]
    assert objects["Confidence"].str.fullmatch(r"\d{1,3}%").all()
    scores = [int(value.rstrip("%")) for value in objects["Confidence"]]
    assert scores == sorted(scores, reverse=True)
    assert len(at.get("download_button")) == 4
    assert not at.error
    summary = texts(at.markdown)
    assert "1 dog" in summary and "no faces" in summary


def test_sliders_refilter_and_redraw_without_running_the_networks(app_env, calls, person_jpg):
    at = open_details(upload(run(ANALYZE), ("person.jpg", person_jpg, "image/jpeg")))
    assert len(calls) == 1
    before = object_rows(at)
    overlays = st_overlays(at)
    at.slider(key="min_detection_score").set_value(0.95).run()
    at.slider(key="nms_iou").set_value(0.3).run()
    at.slider(key="min_face_score").set_value(0.6).run()
    assert_no_exception(at)
    assert at.slider(key="min_face_score").proto.min == 0.6, "the face slider goes below what is ever stored"
    assert len(calls) == 1, "a slider ran the networks again"
    assert object_rows(at) < before
    assert st_overlays(at) != overlays, "the overlays were not redrawn"


def st_overlays(at: AppTest) -> list:
    """The overlay images' backing data (media URLs change with the PNG bytes)."""
    return [img.proto.imgs[0].url for img in result_images(at)[1:]]


def test_seen_before_shows_the_stored_result_at_once(app_env, calls, dog_jpg):
    run_first = upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"))  # stored by now, in any order
    assert_no_exception(run_first)
    calls.clear()
    at = open_details(upload(run(ANALYZE), ("renamed.jpg", dog_jpg, "image/jpeg")))
    assert_no_exception(at)
    assert calls == []
    assert "Seen before — analysed on" in texts(at.info)
    assert "dog" in set(table(at, 0)["Object"])


def test_bad_items_show_a_message_and_the_batch_completes(app_env, calls, astronaut_png, dog_jpg):
    at = upload(
        run(ANALYZE),
        ("notes.txt", b"just some text", "text/plain"),
        ("broken.jpg", dog_jpg[: len(dog_jpg) // 3], "image/jpeg"),
        ("astronaut.png", astronaut_png, "image/png"),
    )
    assert_no_exception(at)
    errors = texts(at.error)
    assert NOT_AN_IMAGE_MESSAGE in errors
    assert "This JPEG file is damaged or incomplete" in errors
    open_details(at, "item2")  # the good image still has its results
    assert result_charts(at) == ["item2-classes", "item2-faces", "item2-interactive"]  # no objects: none found
    headings = [e.proto.body for e in at.html if "<h3" in e.proto.body]
    names = [name for heading in headings for name in ("notes.txt", "broken.jpg", "astronaut.png") if name in heading]
    assert names == ["notes.txt", "broken.jpg", "astronaut.png"]


def test_refused_url_shows_a_message(app_env):
    at = run(ANALYZE)
    at.text_area(key="url_text").set_value("ftp://example.com/cat.jpg\n\n").run()
    at.button[0].click().run()
    assert_no_exception(at)
    assert len(at.error) == 1
    assert "ftp://example.com/cat.jpg" in plain_texts(at)
    assert "ftp" in at.error[0].value.lower()


def _fresh_settings(patch: pytest.MonkeyPatch, name: str, value: str) -> None:
    patch.setenv(name, value)
    get_settings.cache_clear()


def test_store_down_is_a_message(app_env, tmp_path, person_jpg):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store folder should be")
    with pytest.MonkeyPatch.context() as patch:
        _fresh_settings(patch, "PICMETRIC_DATA_DIR", str(tmp_path / "other-data"))
        _fresh_settings(patch, "PICMETRIC_STORE_DIR", str(blocker))
        at = upload(run(ANALYZE), ("person.jpg", person_jpg, "image/jpeg"))
    get_settings.cache_clear()
    assert_no_exception(at)
    assert "image folder" in texts(at.error)


def test_database_down_is_a_message_on_both_pages(app_env, person_jpg):
    with pytest.MonkeyPatch.context() as patch:
        _fresh_settings(patch, "DATABASE_URL", "postgresql://picmetric@127.0.0.1:1/nothing")
        at = upload(run(ANALYZE), ("person.jpg", person_jpg, "image/jpeg"))
        history = run(HISTORY)
    get_settings.cache_clear()
    for page in (at, history):
        assert_no_exception(page)
        assert len(page.error) == 1
        assert page.error[0].value.strip()


def test_history_lists_filters_and_opens_a_detail_view(app_env, calls, dog_jpg, astronaut_png):
    upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"), ("astronaut.png", astronaut_png, "image/png"))
    calls.clear()
    at = run(HISTORY)
    assert_no_exception(at)
    assert "dog" in at.selectbox(key="label").options
    assert len(at.get("plotly_chart")) == 3  # the summary
    names = plain_texts(at)
    assert "dog.jpg" in names and "astronaut.png" in names

    at.selectbox(key="label").set_value("dog").run()
    assert_no_exception(at)
    names = plain_texts(at)
    assert "dog.jpg" in names and "astronaut.png" not in names

    at.selectbox(key="label").set_value(None).run()
    at.selectbox(key="faces").set_value("With faces").run()
    names = plain_texts(at)
    assert "astronaut.png" in names and "dog.jpg" not in names

    md5 = next(b.key for b in at.button if b.key and b.key.startswith("open-")).removeprefix("open-")
    at.button(key=f"open-{md5}").click().run()
    assert at.query_params["md5"] == [md5] or at.query_params["md5"] == md5
    assert_no_exception(at)
    more_like_this = [b for b in at.button if b.key and b.key.startswith("similar-")]
    # the original and the faces overlay (no objects at these thresholds), then a card per similar photo
    assert len(at.get("image")) == 2 + len(more_like_this)
    assert "More like this" in texts(at.subheader)

    at.button[0].click().run()  # back to the gallery: the filter is kept
    assert_no_exception(at)
    assert at.selectbox(key="faces").value == "With faces"
    assert "dog.jpg" not in plain_texts(at)

    shared = run(HISTORY, md5=md5, conf="0.9")  # the shareable URL, in a fresh session
    assert_no_exception(shared)
    assert "astronaut.png" in next(e.proto.body for e in shared.html if "<h1" in e.proto.body)
    assert shared.slider(key="min_detection_score").value == 0.9
    assert len(shared.get("plotly_chart")) >= 2
    open_details(shared, "detail")
    assert len(at.get("download_button")) == 0 and len(shared.get("download_button")) == 4
    assert calls == []


def test_history_unknown_md5_is_a_warning(app_env):
    at = run(HISTORY, md5="0" * 32)
    assert_no_exception(at)
    assert "No analysis with this md5" in at.warning[0].value


def test_file_names_are_plain_text_never_markdown_or_html(app_env):
    name = "**bold** <img src=x onerror=alert(1)> [link](x) #.png"  # no "/": folder parts are cut at intake
    pixels = np.random.default_rng(11).integers(0, 256, (96, 128, 3), dtype=np.uint8)  # a new image: a new record
    analyze = upload(run(ANALYZE), (name, png_bytes(pixels), "image/png"))
    history = run(HISTORY)
    for at in (analyze, history):
        assert_no_exception(at)
        assert name in plain_texts(at)
        assert html.escape(name, quote=False) in "".join(e.proto.body for e in at.html)  # escaped, not markup
        written_as_markdown = [*at.markdown, *at.title, *at.subheader, *at.header, *at.caption]
        assert not [e.value for e in written_as_markdown if "bold" in str(e.value) or "onerror" in str(e.value)]


def test_a_sample_photo_analyses_with_one_click(app_env):
    at = run(ANALYZE)
    assert len(at.get("image")) == len(SAMPLES)
    at.button(key="sample-astronaut.png").click().run()
    assert_no_exception(at)
    assert "astronaut.png" in plain_texts(at)
    assert "1 face" in texts(at.markdown)
    open_details(at)
    faces = next(d.value for d in at.dataframe if "Face" in d.value.columns)
    assert len(faces) == 1 and faces["Confidence"][0].endswith("%")


def test_upload_limit_follows_the_configured_byte_limit(app_env):
    from picmetric_ui.upload_limit import upload_limit_mb

    assert "maxUploadSize" not in (ROOT / ".streamlit" / "config.toml").read_text().split("[browser]")[0].replace(
        "# No maxUploadSize", ""
    )
    with pytest.MonkeyPatch.context() as patch:
        _fresh_settings(patch, "PICMETRIC_MAX_BYTES", str(5 * 1024 * 1024))
        _fresh_settings(patch, "PICMETRIC_VIDEO_MAX_BYTES", str(50 * 1024 * 1024))
        assert upload_limit_mb(get_settings()) == 50  # the server's: the larger, so clips get through
        patch.setattr(st, "get_option", _server_upload_limit(50, st.get_option))
        at = run(ANALYZE)
        assert "Up to 5 MB" in texts(at.caption)
        # What the box says and the browser applies; a photo that gets past it is refused by the intake.
        assert at.file_uploader(key="uploads").proto.max_upload_size_mb == 5
        upload(at, ("big.jpg", b"\xff\xd8\xff" + bytes(6 * 1024 * 1024), "image/jpeg"))
    get_settings.cache_clear()
    assert "the limit is 5 MB" in texts(at.error) + plain_texts(at), texts(at.error)


def _server_upload_limit(megabytes: int, get_option):
    """``st.get_option`` as on a server started with ``--server.maxUploadSize megabytes``."""
    return lambda name: megabytes if name == "server.maxUploadSize" else get_option(name)


@pytest.mark.parametrize("page", [ANALYZE, HISTORY])
def test_with_a_password_set_a_page_shows_nothing_until_signed_in(app_env, page):
    with pytest.MonkeyPatch.context() as patch:
        _fresh_settings(patch, "PICMETRIC_APP_PASSWORD", "demo-day-secret")
        at = run(page)
        assert_no_exception(at)
        assert [box.label for box in at.text_input] == ["Password"]
        assert not at.file_uploader and not at.sidebar.children and not at.dataframe

        at.text_input(key="sign-in-password").input("demo-day")
        at.button[0].click().run()  # the form's submit button sends what was typed
        assert "not right" in texts(at.error)
        assert not at.file_uploader and [box.label for box in at.text_input] == ["Password"]

        at.text_input(key="sign-in-password").input("demo-day-secret")
        at.button[0].click().run()
        assert_no_exception(at)
        assert "Password" not in [box.label for box in at.text_input]
        assert at.sidebar.children  # the pages menu and the Models panel
    get_settings.cache_clear()


def test_history_compares_two_analyses_side_by_side(app_env, dog_jpg, astronaut_png):
    upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"), ("astronaut.png", astronaut_png, "image/png"))
    at = run(HISTORY)
    picks = [c for c in at.checkbox if c.key and c.key.startswith("compare-")][:2]
    for pick in picks:
        pick.check().run()
    compare = next(b for b in at.button if b.label == "Compare side by side")
    compare.click().run()
    assert_no_exception(at)
    assert at.title[0].value == "Compare"
    md5s = [p.key.removeprefix("compare-") for p in picks]
    assert at.query_params["compare"] in ([",".join(md5s)], ",".join(md5s))
    assert len(at.get("image")) >= 2
    assert len(at.get("progress")) >= 4  # each one's top classes


def test_a_camera_shot_is_analysed_and_kept_in_history(app_env, person_jpg):
    at = run(ANALYZE)
    at.toggle(key="camera_on").set_value(True).run()
    shot = jpeg_variant(person_jpg, 0.75, 0.0)  # a photo of its own: not one another test stored already
    at.camera_input(key="camera").set_value(("camera.jpg", shot, "image/jpeg")).run()
    assert_no_exception(at)
    assert "camera.jpg" in plain_texts(at)
    assert "person" in texts(at.markdown)  # the one-line summary names what YOLO found
    history = run(HISTORY)
    assert "camera.jpg" in plain_texts(history)


def test_history_compares_four_analyses_side_by_side(app_env, dog_jpg, person_jpg, astronaut_png):
    from skimage import data

    upload(
        run(ANALYZE),
        ("dog.jpg", dog_jpg, "image/jpeg"),
        ("person.jpg", person_jpg, "image/jpeg"),
        ("astronaut.png", astronaut_png, "image/png"),
        ("coffee.png", png_bytes(data.coffee()), "image/png"),
    )
    at = run(HISTORY)
    picks = [c for c in at.checkbox if c.key and c.key.startswith("compare-")][:4]
    assert len(picks) == 4
    for pick in picks:
        pick.check().run()
    next(b for b in at.button if b.label == "Compare side by side").click().run()
    assert_no_exception(at)
    assert at.title[0].value == "Compare"
    shown = at.query_params["compare"]
    assert sorted((shown[0] if isinstance(shown, list) else shown).split(",")) == sorted(
        p.key.removeprefix("compare-") for p in picks
    )
    assert len(at.get("image")) >= 4
    assert len(at.get("progress")) >= 8  # each one's top classes


def test_history_paging_resets_when_any_filter_changes(app_env):
    at = run(HISTORY)
    at.session_state["page"] = 2
    at.run()
    at.selectbox(key="faces").set_value("Without faces").run()
    assert_no_exception(at)
    assert at.session_state["page"] == 1


def jpeg_variant(data: bytes, scale: float, crop: float) -> bytes:
    """The same picture resized, cropped by ``crop`` of each side and re-encoded: other bytes, another md5."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    dx, dy = int(width * crop), int(height * crop)
    image = image.crop((dx, dy, width - dx, height - dy)).resize((int(width * scale), int(height * scale)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def test_a_near_duplicate_names_the_stored_photo_and_more_like_this_lists_it(app_env, dog_jpg):
    upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"))
    copy = upload(run(ANALYZE), ("dog-copy.jpg", jpeg_variant(dog_jpg, 0.6, 0.025), "image/jpeg"))
    assert_no_exception(copy)
    assert "Near-duplicate of dog.jpg analysed on" in plain_texts(copy)
    assert any(link.proto.label == "Open" for link in copy.get("page_link"))

    from picmetric_ui import resources

    original = resources.service().history(HistoryQuery(filename="dog.jpg", min_score=0.0)).items[0]
    detail = run(HISTORY, md5=original.record.md5)
    assert_no_exception(detail)
    cards = [b.key.removeprefix("similar-") for b in detail.button if b.key and b.key.startswith("similar-")]
    copy_md5 = resources.service().history(HistoryQuery(filename="dog-copy", min_score=0.0)).items[0].record.md5
    assert cards and cards[0] == copy_md5, "the near-duplicate is not the most similar photo"
    assert original.record.md5 not in cards


def test_history_exports_what_the_filter_shows(app_env, dog_jpg):
    upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"))
    at = run(HISTORY)
    at.selectbox(key="label").set_value("dog").run()
    at.radio(key="export").set_value("coco").run()
    next(b for b in at.button if b.label == "Prepare the file").click().run()
    assert_no_exception(at)
    assert not at.error
    assert [b.proto.label for b in at.get("download_button")] == ["Download COCO JSON"]


def test_page_runs_keep_the_keras_session_the_networks_are_built_in(app_env):
    # Streamlit clears Keras' session after each run; mid-build that gave duplicate layer names and no models.
    from keras.src.backend.common import global_state

    run(ANALYZE)
    before = global_state.GLOBAL_STATE_TRACKER
    at = run(HISTORY)
    assert_no_exception(at)
    assert global_state.GLOBAL_STATE_TRACKER is before, "a page run cleared the Keras session"
