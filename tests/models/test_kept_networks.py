"""A later start reads the networks back from their converted models: no TensorFlow, the same results.

The session's analyzer (``analyzer`` fixture) is a first start: it builds the networks in Keras, chooses their
engines and keeps what it converted in ``empty_models_dir``. A fresh Python process on that folder is a later
start, as the app, the API or a batch actor would be after the first one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from picmetric_core.models import engines, kept_networks
from tests.support.photos import DARKNET_DATA

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ("dog.jpg", "person.jpg")

LATER_START = textwrap.dedent(
    """
    import json, sys
    import picmetric_core
    from pathlib import Path
    from picmetric_core.config import Settings
    from picmetric_core.intake.images import decode_for
    from picmetric_core.pipeline import get_analyzer

    settings = Settings(models_dir=Path(sys.argv[1]))
    analyzer = get_analyzer(settings)
    analyses = [analyzer.analyze(decode_for(settings, Path(path).read_bytes())).to_dict() for path in sys.argv[2:]]
    print(json.dumps({
        "analyses": analyses,
        "tensorflow_loaded": "tensorflow" in sys.modules,
        "keras_loaded": "keras" in sys.modules,
        "backend": analyzer.runtime().backend,
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest, with TensorFlow).
        "peak_rss_mib": next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024,
    }))
    """
)


def all_on_openvino(analyzer) -> bool:
    return all(model.runtime.startswith("OpenVINO") for model in analyzer.models)


def later_start(models_dir: Path, photos: list[Path]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LATER_START, str(models_dir), *map(str, photos)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def essentials(analysis: dict) -> dict:
    """What a user reads off a result: classes, objects and faces with their scores and boxes, rounded."""
    return {
        "classes": [(c["label"], round(c["score"], 4)) for c in analysis["classifications"]],
        "objects": [
            (d["label"], round(d["score"], 4), [round(v, 1) for v in d["box"].values()]) for d in analysis["detections"]
        ],
        "faces": [(round(f["score"], 4), [round(v, 1) for v in f["box"].values()]) for f in analysis["faces"]],
        "models": [(m["name"], m["weights"], m["runtime"]) for m in analysis["models"]],
    }


@pytest.mark.slow
def test_a_later_start_runs_without_tensorflow_and_finds_what_the_first_found(analyzer, empty_models_dir):
    if not all_on_openvino(analyzer):
        pytest.skip(f"auto kept Keras for a network on this machine ({[m.runtime for m in analyzer.models]})")
    from picmetric_core.config import Settings
    from picmetric_core.intake.images import decode_for

    photos = [DARKNET_DATA / name for name in PHOTOS]
    first = [analyzer.analyze(decode_for(Settings(), path.read_bytes())).to_dict() for path in photos]
    later = later_start(empty_models_dir, photos)

    assert not later["tensorflow_loaded"] and not later["keras_loaded"]
    assert later["backend"].startswith("OpenVINO")
    assert [essentials(a) for a in later["analyses"]] == [essentials(a) for a in first]
    dog = later["analyses"][0]
    assert "dog" in {d["label"] for d in dog["detections"] if d["score"] >= 0.25}
    assert later["peak_rss_mib"] < 1200, f"a later start peaked at {later['peak_rss_mib']:.0f} MiB"


def test_the_key_changes_when_the_engine_choices_are_deleted_to_measure_again(tmp_path):
    settings = ("auto", "auto", "auto", "lite2")
    (tmp_path / "engines.json").write_text("{}")
    kept = kept_networks.start_key(tmp_path, settings)
    assert kept == kept_networks.start_key(tmp_path, settings)
    (tmp_path / "engines.json").unlink()
    assert kept_networks.start_key(tmp_path, settings) != kept
    assert kept_networks.start_key(tmp_path, ("auto", "auto", "auto", "lite0")) != kept_networks.start_key(
        tmp_path, settings
    )


def test_a_record_whose_converted_model_is_gone_builds_in_keras_again(tmp_path):
    key = "k" * 24
    record = tmp_path / engines.ARTEFACTS_FOLDER / kept_networks.RECORD
    record.parent.mkdir()
    missing = {"path": f"{engines.ARTEFACTS_FOLDER}/gone.xml", "precision": "bfloat16"}
    info = {
        "role": "classifier",
        "name": "x",
        "weights": "x",
        "full": False,
        "input_size": 224,
        "note": "",
        "runtime": "",
    }
    entry = {
        "classifier": {"info": info, "model": missing, "preprocessing": "resnet50", "resize_to": 256},
        "detector": {"info": info, "model": missing},
        "faces": {"info": info, "models": {"pnet": missing, "rnet": missing, "onet": missing}},
    }
    record.write_text(json.dumps({key: entry}))
    assert kept_networks.read(tmp_path, key) is None
    record.write_text("not json")
    assert kept_networks.read(tmp_path, key) is None
