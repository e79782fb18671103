"""Objects built once per server and shared by every session: settings, the service, the warm-up.

``st.cache_resource`` values are shared by all sessions and threads; each one here is thread-safe
(the service and the analyzer are; :class:`Warmup` only publishes immutable state).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from picmetric_core.config import Settings, get_settings
from picmetric_core.intake.images import DecodedImage, decode_for
from picmetric_core.pipeline import Analyzer, StageCallback, get_analyzer
from picmetric_core.results import Analysis
from picmetric_core.service import PicMetricService

log = logging.getLogger(__name__)


def settings() -> Settings:
    """The same settings as the API and the CLI (``PICMETRIC_*`` environment and ``.env``)."""
    return get_settings()


def settings_key(current: Settings) -> str:
    """A cache key that changes when the data, database, store or models configuration does."""
    return current.model_dump_json()


@dataclass
class Warmup:
    """Loads the three networks once per server in a background thread and runs one tiny image."""

    settings: Settings
    started_at: float = field(default_factory=time.perf_counter)
    seconds: float | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Warmup:
        threading.Thread(target=self._run, name="picmetric-warmup", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            analyzer = get_analyzer(self.settings)
            analyzer.analyze(_tiny_image(self.settings))
        except Exception as error:  # shown in the sidebar; the first upload will retry loading
            log.exception("model warm-up failed")
            self.error = str(error) or type(error).__name__
        finally:
            self.seconds = round(time.perf_counter() - self.started_at, 1)
            self.done.set()

    @property
    def ready(self) -> bool:
        return self.done.is_set() and self.error is None


def _tiny_image(current: Settings) -> DecodedImage:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return decode_for(current, buffer.getvalue())


@st.cache_resource(show_spinner=False)
def _warmup(key: str) -> Warmup:
    return Warmup(settings()).start()


def warmup() -> Warmup:
    """The server's warm-up, started on the first call (it never blocks the page)."""
    return _warmup(settings_key(settings()))


class LazyAnalyzer:
    """Loads the networks on first use, so pages that only read history never wait for them."""

    def __init__(self, current: Settings) -> None:
        self._settings = current

    @property
    def loaded(self) -> Analyzer:
        return get_analyzer(self._settings)

    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis:
        return self.loaded.analyze(image, on_stage=on_stage)


@st.cache_resource(show_spinner=False)
def _service(key: str) -> PicMetricService:
    current = settings()
    return PicMetricService(current, LazyAnalyzer(current))


def service() -> PicMetricService:
    """The shared service (raises ``DatabaseUnavailable`` or ``StoreUnavailable`` if it cannot start)."""
    return _service(settings_key(settings()))
