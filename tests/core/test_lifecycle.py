"""One model lifecycle for the API and the app: loads once in the background, waited for, failures reported."""

from __future__ import annotations

import threading

import pytest

from picmetric_core.config import Settings
from picmetric_core.errors import ModelsNotReady
from picmetric_core.intake.images import decode_for
from picmetric_core.lifecycle import ModelLoader, warm_up_image
from picmetric_core.pipeline import analyzer_key


@pytest.mark.slow
def test_analyses_wait_for_the_networks_and_load_happens_once(analyzer, empty_models_dir, dog_jpg):
    settings = Settings(models_dir=empty_models_dir)
    release = threading.Event()
    calls: list[Settings] = []

    def load(given: Settings):
        calls.append(given)
        release.wait(30)
        return analyzer

    loader = ModelLoader(settings, load=load, wait_s=0.05)
    assert loader.describe()["state"] == "loading" and not loader.done.is_set()
    with pytest.raises(ModelsNotReady, match="still loading"):
        loader.analyze(decode_for(settings, dog_jpg))  # starts loading, gives up after wait_s
    loader.start()
    release.set()
    assert loader.done.wait(30) and loader.ready and loader.error is None and loader.seconds is not None
    assert len(calls) == 1
    analysis = loader.analyze(decode_for(settings, dog_jpg))
    assert "dog" in {d.label for d in analysis.detections}
    report = loader.describe()
    assert report["state"] == "ready" and {m["role"] for m in report["models"]} == {"classifier", "detector", "faces"}


def test_a_failed_load_is_reported_and_analyses_say_why(empty_models_dir, dog_jpg):
    settings = Settings(models_dir=empty_models_dir)

    def load(_settings: Settings):
        raise RuntimeError("no weights here")

    loader = ModelLoader(settings, load=load).start()
    assert loader.done.wait(30)
    assert loader.state == "failed" and not loader.ready and loader.error == "no weights here"
    assert loader.describe() == {"state": "failed", "error": "no weights here"}
    with pytest.raises(ModelsNotReady, match="could not be loaded: no weights here"):
        loader.analyze(decode_for(settings, dog_jpg))


@pytest.mark.slow
def test_warm_up_runs_an_image_through_the_loaded_networks(analyzer, empty_models_dir):
    settings = Settings(models_dir=empty_models_dir)
    seen: list[str] = []

    class Counting:
        models = analyzer.models

        def analyze(self, image, on_stage=None):
            seen.append(image.md5)
            return analyzer.analyze(image, on_stage=on_stage)

    loader = ModelLoader(settings, load=lambda _s: Counting(), warm_up=True).start()
    assert loader.done.wait(120) and loader.ready
    assert seen == [warm_up_image(settings).md5]


def test_every_setting_that_shapes_the_analyzer_is_in_its_cache_key(tmp_path):
    base = Settings(models_dir=tmp_path)
    changes = {
        "models_dir": tmp_path / "other",
        "classifier_top_k": 3,
        "face_detector": "package",
        "precision": "mixed_bfloat16",
        "device_nms": "on",
    }
    for field, value in changes.items():
        assert analyzer_key(base.model_copy(update={field: value})) != analyzer_key(base), field
    assert analyzer_key(base.model_copy(update={"api_token": "x"})) == analyzer_key(base)
