"""Batched analysis equals one-at-a-time analysis; mixed bfloat16 stays close to float32; the GPU check runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from picmetric_core.filters import shown
from picmetric_core.intake.images import DecodedImage, decode_image
from picmetric_core.pipeline import Analyzer
from picmetric_core.results import Analysis
from tests.support.photos import png_bytes

pytestmark = pytest.mark.slow  # the real networks, loaded once per run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(limits, dog_jpg, person_jpg, astronaut_png) -> list[DecodedImage]:
    """Five real photos of five sizes: faces, a cat, a cup, a dog with vehicles, people with a horse."""
    sources = [astronaut_png, png_bytes(data.chelsea()), png_bytes(data.coffee()), dog_jpg, person_jpg]
    images = [decode_image(source, **limits) for source in sources]
    assert len({image.rgb.shape for image in images}) == len(images)
    return images


@pytest.fixture(scope="module")
def one_at_a_time(analyzer, photos) -> list[Analysis]:
    return [analyzer.analyze(image) for image in photos]


def assert_same_analysis(batched: Analysis, alone: Analysis) -> None:
    assert batched.md5 == alone.md5
    assert [c.label for c in batched.classifications] == [c.label for c in alone.classifications]
    np.testing.assert_allclose(
        [c.score for c in batched.classifications], [c.score for c in alone.classifications], atol=1e-4
    )
    assert [d.label for d in batched.detections] == [d.label for d in alone.detections]
    for a, b in zip(batched.detections, alone.detections, strict=True):
        assert abs(a.score - b.score) < 1e-4 and a.box.iou(b.box) > 0.999
    assert len(batched.faces) == len(alone.faces)
    for a, b in zip(batched.faces, alone.faces, strict=True):
        np.testing.assert_allclose(a.box.as_list(), b.box.as_list(), atol=0.01)
        assert abs(a.score - b.score) < 1e-4


@pytest.mark.parametrize("batch_size", [2, 5])
def test_analyze_many_equals_analyze_on_mixed_size_photos(analyzer, photos, one_at_a_time, batch_size):
    batched = analyzer.analyze_many(photos, batch_size=batch_size)
    for together, alone in zip(batched, one_at_a_time, strict=True):
        assert_same_analysis(together, alone)
    assert {"classifier", "detector", "faces", "total"} <= set(batched[0].timings_ms)


def test_analyze_many_with_concurrent_networks_gives_the_same_results(analyzer, photos, one_at_a_time):
    concurrent = Analyzer(analyzer.classifier, analyzer.detector, analyzer.faces, parallel=True)
    for together, alone in zip(concurrent.analyze_many(photos, batch_size=2), one_at_a_time, strict=True):
        assert_same_analysis(together, alone)


def test_analyze_many_edge_cases(analyzer, photos):
    assert analyzer.analyze_many([]) == []
    with pytest.raises(ValueError, match="batch_size"):
        analyzer.analyze_many(photos, batch_size=0)


def test_batched_mtcnn_equals_per_image(analyzer, photos):
    faces = analyzer.faces
    rgbs = [image.rgb for image in photos] + [np.zeros((8, 30, 3), np.uint8)]  # smaller than P-Net's window
    batched = faces.detect_faces_batch(rgbs)
    assert [len(found) for found in batched] == [1, 0, 0, 0, 0, 0]
    for rgb, together in zip(rgbs, batched, strict=True):
        alone = faces.detect_faces(rgb)
        assert len(alone) == len(together)
        for a, b in zip(alone, together, strict=True):
            np.testing.assert_allclose(a.box.as_list(), b.box.as_list(), atol=1e-3)
            for name, point in a.landmarks.items():
                assert abs(point.x - b.landmarks[name].x) < 1e-3 and abs(point.y - b.landmarks[name].y) < 1e-3


def test_unknown_precision_is_refused_and_the_global_policy_restored(monkeypatch):
    import keras
    from pydantic import ValidationError

    from picmetric_core.config import Settings
    from picmetric_core.models.compiled import building_precision

    monkeypatch.setenv("PICMETRIC_PRECISION", "float8")
    with pytest.raises(ValidationError, match="PICMETRIC_PRECISION"):
        Settings()
    with pytest.raises(ValueError, match="unknown precision 'float8'"), building_precision("float8"):
        pass
    monkeypatch.setenv("PICMETRIC_PRECISION", "mixed_bfloat16")
    before = keras.config.dtype_policy().name
    with building_precision(Settings().precision) as chosen:
        assert chosen == "mixed_bfloat16" and keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


def test_mixed_bfloat16_keeps_top_class_and_confident_detections(analyzer, empty_models_dir, photos, one_at_a_time):
    """Mixed bfloat16 on this CPU (TensorFlow; AVX512-BF16 where present): same top-1, same sure detections."""
    from picmetric_core.models.classifier import load_classifier
    from picmetric_core.models.compiled import building_precision
    from picmetric_core.models.yolo import load_detector

    with building_precision("mixed_bfloat16"):
        bf16 = Analyzer(load_classifier(empty_models_dir), load_detector(empty_models_dir), analyzer.faces)
    assert bf16.detector is not analyzer.detector
    for image, reference in zip(photos, one_at_a_time, strict=True):
        ours = bf16.analyze(image)
        assert ours.classifications[0].label == reference.classifications[0].label
        assert abs(ours.classifications[0].score - reference.classifications[0].score) < 0.05
        sure = [d for d in shown(reference).detections if d.score >= 0.5]
        for det in sure:
            twin = max(shown(ours).detections, key=lambda d: (d.label == det.label) * d.box.iou(det.box))
            assert twin.label == det.label and twin.box.iou(det.box) > 0.85, (det, twin)
            assert abs(twin.score - det.score) < 0.08


def test_gpu_check_script_runs_in_cpu_smoke_mode(tmp_path):
    """bench/gpu_check.py end to end on JAX-CPU with tiny counts, so the prepared GPU script cannot rot."""
    pytest.importorskip("jax")
    reference = tmp_path / "reference.json"
    script = [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--reference", str(reference)]
    subprocess.run([*script, "--write-reference"], check=True, capture_output=True, timeout=240, cwd=REPO)
    run = subprocess.run(
        [*script, "--cpu-smoke", "--out", str(tmp_path)],
        # NMS on the device is what a GPU gets by default; here on JAX-CPU it is forced on.
        env=os.environ | {"PYTHONUNBUFFERED": "1", "PICMETRIC_DEVICE_NMS": "on"},
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["checks"] == {"float32_vs_cpu": True, "bf16_vs_float32": True, "analyze_many_vs_analyze": True}
    assert report["detector_nms_on_device"] is True
    for label in ("default float32", "default mixed_bfloat16"):
        assert {"classifier", "detector", "faces", "end_to_end", "overlay_png"} <= set(report["latency_ms"][label])
        assert report["throughput_img_s"][label]["batch_2"] > 0
    assert "throughput, all three networks" in run.stdout
