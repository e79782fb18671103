"""What the video tests share: clips made from package photos, and a runtime on the session's networks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from picmetric_core.lifecycle import ModelLoader
from picmetric_core.results import Point
from picmetric_core.runtime import Runtime
from picmetric_core.video.results import CountingLine
from tests.support.services import make_settings
from tests.support.videos import Sprite, face_patch, horse_patch, make_clip

WIDTH, HEIGHT = 640, 360
CENTRE_LINE = CountingLine(Point(WIDTH / 2, 0), Point(WIDTH / 2, HEIGHT))
"""A vertical line drawn top to bottom: moving right crosses it "out", moving left "in"."""
HORSE = Sprite(horse_patch(0.8), (-20, 60), (480, 120))
"""Left to right across the whole picture (its centre passes x = 320 about halfway)."""
FACE = Sprite(face_patch(), (450, 150), (50, 150))
"""Right to left, below the horse."""


@pytest.fixture(scope="session")
def horse_and_face_clip() -> bytes:
    """3 s of 640×360 at 15 fps with a 440 Hz tone: a horse and a face crossing the picture in opposite ways."""
    return make_clip([HORSE, FACE], seconds=3.0, fps=15, size=(WIDTH, HEIGHT), audio=True)


def runtime_in(folder: Path, analyzer, models_dir: Path) -> Runtime:
    """A runtime on SQLite and a local folder under ``folder``, running the session's networks."""
    settings = make_settings(folder, models_dir=models_dir)
    return Runtime(settings, ModelLoader(settings, load=lambda _settings: analyzer))


@pytest.fixture
def video_runtime(tmp_path: Path, analyzer, empty_models_dir) -> Iterator[Runtime]:
    """A runtime of its own for one test."""
    runtime = runtime_in(tmp_path, analyzer, empty_models_dir)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def module_video_runtime(tmp_path_factory, analyzer, empty_models_dir) -> Iterator[Runtime]:
    """One runtime for a module's tests (so they can share one analysed clip)."""
    runtime = runtime_in(tmp_path_factory.mktemp("videos"), analyzer, empty_models_dir)
    yield runtime
    runtime.close()


def stored_keys(root: Path) -> list[str]:
    """Every object key under a local store folder."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())
