"""How the networks run: the fidelity gate, what PICMETRIC_PRECISION=auto picks, and the converted models kept.

The gate's photos are the suite's own (darknet's seven and scikit-image's astronaut). Each engine this
machine runs is held against Keras float32 on them; whatever auto chose must pass, so auto never runs
what fails here on the machine it runs on.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from picmetric_core.models import choice, engines, fidelity
from picmetric_core.results import Box, Classification, Detection, Face, Point
from tests.support.photos import DARKNET_DATA

SUITE_PHOTOS = ("dog", "person", "horses", "eagle", "giraffe", "kite", "scream")


@pytest.fixture(scope="module")
def suite_photos() -> list[tuple[str, np.ndarray]]:
    import skimage.data
    from PIL import Image

    photos = [(name, np.asarray(Image.open(DARKNET_DATA / f"{name}.jpg").convert("RGB"))) for name in SUITE_PHOTOS]
    return [*photos, ("astronaut", np.ascontiguousarray(skimage.data.astronaut()))]


def networks(analyzer) -> dict[str, object]:
    return {"classifier": analyzer.classifier, "detector": analyzer.detector, "faces": analyzer.faces}


def against_keras_float32(network, engine: engines.Engine, models_dir, photos) -> fidelity.Fidelity:
    """The gate's verdict on ``network`` run by ``engine``, against Keras float32 on ``photos``."""
    role = choice.ROLES[network.info.role]
    return choice.gate(role, network.run_on(engines.KERAS_FLOAT32), network.run_on(engine, models_dir), photos)


@pytest.mark.slow
@pytest.mark.parametrize("role", ["classifier", "detector", "faces"])
def test_what_auto_picked_passes_the_gate_on_the_suite_photos(analyzer, suite_photos, role):
    network = networks(analyzer)[role]
    reference = network.run_on(engines.KERAS_FLOAT32)
    verdict = choice.gate(choice.ROLES[role], reference, network, suite_photos)
    assert verdict.passed, f"{role} on {network.info.runtime}: {verdict.failures}"


@pytest.mark.slow
@pytest.mark.parametrize("role", ["classifier", "detector", "faces"])
def test_openvino_float32_gives_what_keras_float32_gives(analyzer, suite_photos, empty_models_dir, role):
    """The converted model is the same network: in float32 it passes the gate with room to spare."""
    if not engines.runnable(engines.OPENVINO_FLOAT32):
        pytest.fail("OpenVINO does not run here: requirements-no-deps.txt installs it")
    verdict = against_keras_float32(networks(analyzer)[role], engines.OPENVINO_FLOAT32, empty_models_dir, suite_photos)
    assert verdict.passed, verdict.failures
    assert verdict.worst_score_delta < 0.001 and verdict.worst_landmark_px < 0.05 and verdict.top1_changed == 0


@pytest.mark.slow
@pytest.mark.parametrize("role", ["classifier", "detector", "faces"])
def test_bfloat16_with_a_two_part_first_convolution_gives_what_float32_gives(
    analyzer, suite_photos, empty_models_dir, role
):
    """Whole-network bfloat16 moved the horses' scores by 0.037 and changed the astronaut's top class; with
    the first convolution's weights kept as two bfloat16 parts every network passes the gate, so auto may
    take bfloat16's speed."""
    if not engines.runnable(engines.OPENVINO_BFLOAT16):
        pytest.skip("this CPU has no native bfloat16 (neither AMX nor AVX-512 bf16)")
    verdict = against_keras_float32(networks(analyzer)[role], engines.OPENVINO_BFLOAT16, empty_models_dir, suite_photos)
    assert verdict.passed, verdict.failures


def test_a_first_convolution_in_two_parts_computes_what_it_computed(empty_models_dir):
    if engines.openvino_version() is None:
        pytest.fail("OpenVINO does not run here: requirements-no-deps.txt installs it")
    from picmetric_core.models.mtcnn_keras import build_onet
    from picmetric_core.models.split_first_convolution import bfloat16_rounded, split_first_convolution

    onet = engines.openvino_artefact(build_onet(), empty_models_dir, "onet (random weights)")
    split = split_first_convolution(onet)
    assert split is not None
    parts = [op for op in split.get_ordered_ops() if op.get_type_name() == "Convolution"][:2]
    high, low = (part.input_value(1).get_node().get_data() for part in parts)
    np.testing.assert_array_equal(bfloat16_rounded(high), high)  # the first part loses nothing to bfloat16
    assert np.abs(low).max() <= np.abs(high).max() / 2**7  # the second is what bfloat16 would lose
    core = engines._core()
    float32 = {"INFERENCE_PRECISION_HINT": "f32"}
    whole, two_parts = (core.compile_model(m, "CPU", float32) for m in (onet, split))
    faces = np.random.default_rng(7).random((3, 48, 48, 3), dtype=np.float32)
    expected, got = whole(faces), two_parts(faces)
    for i in range(len(whole.outputs)):
        np.testing.assert_allclose(got[i], expected[i], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_each_result_says_how_its_networks_ran(analyzer, empty_models_dir, dog_jpg, limits):
    from picmetric_core.intake.images import decode_image

    analysis = analyzer.analyze(decode_image(dog_jpg, **limits))
    chosen = json.loads((empty_models_dir / choice.CHOICES_FILE).read_text())
    assert {entry["role"] for entry in chosen.values()} == {"classifier", "detector", "faces"}
    for info in analysis.models:
        assert engines.instruction_set() in info.runtime
        engine = next(entry["engine"] for entry in chosen.values() if entry["role"] == info.role)
        expected = engines.ENGINES[engine]
        assert expected.precision in info.runtime
        assert ("OpenVINO" in info.runtime) == (expected.runtime == "openvino")


@pytest.mark.slow
def test_a_second_start_reads_the_choice_instead_of_measuring(analyzer, empty_models_dir):
    started = time.perf_counter()
    network, kept = choice.choose(choice.DETECTOR, analyzer.detector, empty_models_dir)
    assert not kept.measured and time.perf_counter() - started < 2
    assert network.info.runtime == analyzer.detector.info.runtime
    assert {trial.engine for trial in kept.trials} == {engine.name for engine in choice.candidates()}


# --- the gate's rules, on hand-made results ---------------------------------------------------------


CLASS_IDS = {"dog": 208, "wolf": 269, "fox": 277, "cat": 281, "lynx": 287, "bear": 294, "hare": 331}


def classes(*labels: str) -> list[Classification]:
    return [Classification(label, CLASS_IDS[label], 0.5 - rank / 100) for rank, label in enumerate(labels)]


def test_gate_wants_the_same_top1_and_four_of_the_top5():
    reference = classes("dog", "wolf", "fox", "cat", "lynx")
    assert fidelity.compare_classes(reference, classes("dog", "wolf", "fox", "cat", "bear")).passed
    assert not fidelity.compare_classes(reference, classes("wolf", "dog", "fox", "cat", "lynx")).passed
    assert not fidelity.compare_classes(reference, classes("dog", "wolf", "fox", "bear", "hare")).passed


def dog(score: float, shift: float = 0.0) -> Detection:
    return Detection("dog", 16, score, Box(100 + shift, 100, 300 + shift, 300))


def test_gate_matches_every_detection_by_box_and_score():
    assert fidelity.compare_detections([dog(0.80)], [dog(0.82, shift=4)]).passed  # IoU 0.96, Δ 0.02
    assert not fidelity.compare_detections([dog(0.80)], [dog(0.80, shift=20)]).passed  # IoU 0.82
    assert not fidelity.compare_detections([dog(0.80)], [dog(0.85)]).passed  # Δ 0.05
    assert not fidelity.compare_detections([dog(0.80)], []).passed  # lost
    assert not fidelity.compare_detections([], [dog(0.30)]).passed  # a new one above 0.25
    # Across the floor is the same box: 0.26 against 0.24 passes, a box under the floor on both sides is ignored.
    assert fidelity.compare_detections([dog(0.26)], [dog(0.24)]).passed
    assert fidelity.compare_detections([dog(0.12)], []).passed


def face(dx: float = 0.0, score: float = 0.99) -> Face:
    points = {
        "left_eye": (30, 40), "right_eye": (70, 40), "nose": (50, 60), "mouth_left": (35, 80), "mouth_right": (65, 80),
    }  # fmt: skip
    return Face(score, Box(0, 0, 100, 120), {name: Point(x + dx, y) for name, (x, y) in points.items()})


def test_gate_wants_the_same_faces_with_landmarks_within_one_and_a_half_pixels():
    assert fidelity.compare_faces([face()], [face(dx=1.4)]).passed
    assert not fidelity.compare_faces([face()], [face(dx=1.6)]).passed
    assert not fidelity.compare_faces([face()], []).passed


def test_a_shape_that_comes_back_runs_on_a_model_compiled_for_it(empty_models_dir):
    """A camera's frames give P-Net the same shapes every time: from the second call they get a model compiled
    for that shape (in the background), which answers exactly as the free-shape model did."""
    if engines.openvino_version() is None:
        pytest.fail("OpenVINO does not run here: requirements-no-deps.txt installs it")
    from picmetric_core.models.mtcnn_keras import KerasMtcnn

    predict = engines.predictor(KerasMtcnn()._pnet, engines.OPENVINO_FLOAT32, empty_models_dir, "pnet")
    rng = np.random.default_rng(5)
    canvas = [rng.uniform(0, 255, (1, 96, 128, 3)).astype(np.float32), np.zeros((1, 94, 126, 1), np.float32)]
    first = predict(canvas)[0]
    deadline = time.monotonic() + 60
    while not predict._static and time.monotonic() < deadline:
        predict(canvas)
        time.sleep(0.05)
    assert list(predict._static) == [tuple(a.shape for a in canvas)]
    np.testing.assert_allclose(predict(canvas)[0], first, rtol=1e-5, atol=1e-5)
    other = [rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32), np.zeros((1, 62, 62, 1), np.float32)]
    assert predict(other)[0].shape[1:3] == (27, 27)  # a new shape still runs, on the free-shape model


# --- converted models kept under the models folder ----------------------------------------------------


def test_a_converted_model_is_kept_and_rebuilt_when_its_weights_change(tmp_path):
    if engines.openvino_version() is None:
        pytest.fail("OpenVINO does not run here: requirements-no-deps.txt installs it")
    from picmetric_core.models.mtcnn_keras import build_pnet

    pnet = build_pnet()
    engines.openvino_artefact(pnet, tmp_path, "pnet.lz4 sha256:aaaa")
    kept = sorted((tmp_path / engines.ARTEFACTS_FOLDER).glob("*.xml"))
    assert len(kept) == 1
    written = kept[0].stat().st_mtime_ns
    engines.openvino_artefact(pnet, tmp_path, "pnet.lz4 sha256:aaaa")
    assert kept[0].stat().st_mtime_ns == written  # read back, not converted again
    engines.openvino_artefact(pnet, tmp_path, "pnet.lz4 sha256:bbbb")
    assert len(list((tmp_path / engines.ARTEFACTS_FOLDER).glob("*.xml"))) == 2


def test_openvino_sends_no_telemetry():
    """OpenVINO's telemetry package would report usage to Google Analytics: it is never installed."""
    import importlib.util

    assert importlib.util.find_spec("openvino") is not None
    assert importlib.util.find_spec("openvino_telemetry") is None
