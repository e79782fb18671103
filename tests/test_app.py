"""The Analyze and History pages, run headless with AppTest against the real networks and a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from picmetric_core.config import get_settings
from picmetric_core.intake.images import NOT_AN_IMAGE_MESSAGE

ROOT = Path(__file__).resolve().parent.parent
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


def table(at: AppTest, index: int):
    return at.dataframe[index].value


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_analyze_page_starts_with_limits_and_models(app_env):
    at = run(ANALYZE)
    assert_no_exception(at)
    assert "Formats: JPEG, PNG, WebP, GIF, BMP or TIFF. Up to 20 MB" in texts(at.caption)
    sidebar = texts(at.sidebar.caption)
    assert "Backend" in sidebar
    models = texts(at.sidebar.markdown)
    for line in ("**Classifier:** EfficientNet-Lite0", "**Detector:** YOLOv3-tiny", "**Faces:** MTCNN"):
        assert line in models
    assert "offline stand-in" in models and "full weights" in models
    assert [link.proto.label for link in at.get("page_link")] == ["Analyze", "History"]


def test_upload_shows_overlays_charts_tables_and_downloads(app_env, calls, dog_jpg):
    at = upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"))
    assert_no_exception(at)
    assert len(calls) == 1
    assert len(at.get("image")) == 3  # original and both overlays
    assert len(at.get("plotly_chart")) == 3
    objects = table(at, 0)
    assert {"dog", "bicycle"} <= set(objects["label"])
    assert list(objects.columns) == ["label", "score", "x1", "y1", "x2", "y2"]
    assert len(at.get("download_button")) == 4
    assert not at.error
    progress = texts(at.markdown)
    for step in ("classifying (ImageNet)", "detecting objects (COCO)", "finding faces"):
        assert f"dog.jpg: {step}…" in progress


def test_sliders_refilter_and_redraw_without_running_the_networks(app_env, calls, person_jpg):
    at = upload(run(ANALYZE), ("person.jpg", person_jpg, "image/jpeg"))
    assert len(calls) == 1
    before = len(table(at, 0))
    overlays = st_overlays(at)
    at.sidebar.slider(key="min_detection_score").set_value(0.95).run()
    at.sidebar.slider(key="nms_iou").set_value(0.3).run()
    at.sidebar.slider(key="min_face_score").set_value(0.0).run()
    assert_no_exception(at)
    assert len(calls) == 1, "a slider ran the networks again"
    assert len(table(at, 0)) < before
    assert st_overlays(at) != overlays, "the overlays were not redrawn"


def st_overlays(at: AppTest) -> list:
    """The two overlay images' backing data (media URLs change with the PNG bytes)."""
    return [img.proto.imgs[0].url for img in at.get("image")[1:]]


def test_seen_before_shows_the_stored_result_at_once(app_env, calls, dog_jpg):
    run_first = upload(run(ANALYZE), ("dog.jpg", dog_jpg, "image/jpeg"))  # stored by now, in any order
    assert_no_exception(run_first)
    calls.clear()
    at = upload(run(ANALYZE), ("renamed.jpg", dog_jpg, "image/jpeg"))
    assert_no_exception(at)
    assert calls == []
    assert "Seen before — analysed on" in texts(at.info)
    assert "dog" in set(table(at, 0)["label"])


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
    assert len(at.get("plotly_chart")) == 3  # the good image still has its results
    assert [s.value for s in at.subheader if s.value in ("notes.txt", "broken.jpg", "astronaut.png")] == [
        "notes.txt",
        "broken.jpg",
        "astronaut.png",
    ]


def test_refused_url_shows_a_message(app_env):
    at = run(ANALYZE)
    at.text_area(key="url_text").set_value("ftp://example.com/cat.jpg\n\n").run()
    at.button[0].click().run()
    assert_no_exception(at)
    assert len(at.error) == 1
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
    captions = texts(at.markdown)
    assert "dog.jpg" in captions and "astronaut.png" in captions

    at.selectbox(key="label").set_value("dog").run()
    assert_no_exception(at)
    names = texts(at.markdown)
    assert "dog.jpg" in names and "astronaut.png" not in names

    at.selectbox(key="label").set_value(None).run()
    at.selectbox(key="faces").set_value("With faces").run()
    names = texts(at.markdown)
    assert "astronaut.png" in names and "dog.jpg" not in names

    md5 = next(b.key for b in at.button if b.key and b.key.startswith("open-")).removeprefix("open-")
    at.button(key=f"open-{md5}").click().run()
    assert at.query_params["md5"] == [md5] or at.query_params["md5"] == md5
    assert_no_exception(at)
    assert len(at.get("image")) == 3

    shared = run(HISTORY, md5=md5)  # the shareable URL, in a fresh session
    assert_no_exception(shared)
    assert shared.title[0].value == "astronaut.png"
    assert len(shared.get("plotly_chart")) == 3
    assert len(at.get("download_button")) == 4
    assert calls == []


def test_history_unknown_md5_is_a_warning(app_env):
    at = run(HISTORY, md5="0" * 32)
    assert_no_exception(at)
    assert "No analysis with md5" in at.warning[0].value
