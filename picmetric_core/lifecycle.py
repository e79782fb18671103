"""The networks' lifetime: loaded once, in the background, and waited for by whoever needs them.

One :class:`ModelLoader` serves the API (held by its runtime) and the app (one per server): lookups and
history work while it loads, and an analysis waits for the networks instead of failing.
"""

from __future__ import annotations

import gc
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any, Literal

import numpy as np

from picmetric_core.config import Settings
from picmetric_core.errors import ModelsNotReady, without_paths
from picmetric_core.intake.images import DecodedImage, decode_image
from picmetric_core.pipeline import Analyzer, StageCallback
from picmetric_core.results import Analysis

log = logging.getLogger(__name__)

# A request for an analysis waits this long for the networks to finish loading before a 503.
MODELS_WAIT_S = 300.0

LoaderState = Literal["idle", "loading", "ready", "failed"]


class ModelLoader:
    """Loads the networks once, in a background thread, and hands analyses to them when ready.

    It is the service's analyzer. The outcome is a :class:`~concurrent.futures.Future`: ``done``
    is set when it resolves, ``error`` says why it failed and ``seconds`` how long it took.

    Args:
        settings: which networks (see :func:`picmetric_core.pipeline.analyzer_key`).
        load: builds the analyzer; :func:`picmetric_core.pipeline.get_analyzer` by default.
        wait_s: how long an analysis waits for the networks before :class:`ModelsNotReady`.
        warm_up: run one small image through the networks once loaded, so the first real one does not
            pay for compiling them (the app does; the API answers /healthz "ready" sooner without).
    """

    def __init__(
        self,
        settings: Settings,
        load: Callable[[Settings], Any] | None = None,
        wait_s: float = MODELS_WAIT_S,
        *,
        warm_up: bool = False,
    ) -> None:
        self.settings = settings
        self._load = load
        self._wait_s = wait_s
        self._warm_up = warm_up
        self._future: Future[Analyzer] = Future()
        self._start_lock = threading.Lock()
        self._started_at: float | None = None
        self.seconds: float | None = None
        self.done = threading.Event()  # set once loading has finished, either way

    def start(self) -> ModelLoader:
        """Start loading (once; later calls do nothing). Returns the loader."""
        with self._start_lock:
            if self._started_at is None:
                self._started_at = time.perf_counter()
                threading.Thread(target=self._run, name="picmetric-model-load", daemon=True).start()
        return self

    @property
    def state(self) -> LoaderState:
        if self._started_at is None:
            return "idle"
        if not self._future.done():
            return "loading"
        return "failed" if self._future.exception() is not None else "ready"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def error(self) -> str | None:
        """Why loading failed, for people; None while loading and after a success."""
        if not self._future.done() or self._future.exception() is None:
            return None
        error = self._future.exception()
        return str(error) or type(error).__name__

    def describe(self) -> dict[str, Any]:
        """What ``/healthz`` reports about the networks."""
        report: dict[str, Any] = {"state": "loading" if self.state == "idle" else self.state}
        if self.error is not None:
            report["error"] = without_paths(self.error)
        if self.ready:
            analyzer = self._future.result()
            report["models"] = [asdict(info) for info in analyzer.models]
            report["load_seconds"] = dict(analyzer.load_seconds)
        return report

    def analyzer(self, wait_s: float | None = None) -> Analyzer:
        """The loaded networks, waiting up to ``wait_s`` (default the loader's) for them.

        Raises:
            ModelsNotReady: still loading after the wait, or loading failed.
        """
        self.start()
        if not self.done.wait(self._wait_s if wait_s is None else wait_s):
            raise ModelsNotReady("The networks are still loading; try again in a minute.")
        if self.error is not None:
            raise ModelsNotReady(f"The networks could not be loaded: {self.error}")
        return self._future.result()

    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis:
        return self.analyzer().analyze(image, on_stage=on_stage)

    def _run(self) -> None:
        self._future.set_running_or_notify_cancel()
        try:
            load = self._load
            if load is None:
                from picmetric_core.pipeline import get_analyzer

                load = get_analyzer
            analyzer = load(self.settings)
            if self._warm_up:
                analyzer.analyze(warm_up_image(self.settings))
            log.info("networks ready: %s", ", ".join(info.name for info in analyzer.models))
            freeze_the_heap()
        except Exception as error:
            log.exception("loading the networks failed")
            self._mark_finished()
            self._future.set_exception(error)
        else:
            self._mark_finished()
            self._future.set_result(analyzer)
        finally:
            self.done.set()

    def _mark_finished(self) -> None:
        assert self._started_at is not None
        self.seconds = round(time.perf_counter() - self._started_at, 1)


def freeze_the_heap() -> None:
    """Leave what is alive now (after loading the networks: ~575,000 objects of TensorFlow, Keras and
    the networks) out of every later garbage collection.

    They live as long as the process. Walking them made each full collection ~370 ms of held GIL on
    the 2-core machine (Streamlit runs one after every page run), during which no request was served;
    frozen, a full collection takes under a millisecond.
    """
    gc.collect()
    gc.freeze()


def warm_up_image(settings: Settings) -> DecodedImage:
    """A 640x480 noise image, decoded as an upload would be: enough to compile every network's path.

    The upload limits do not apply to it (a deployment may accept only smaller images; the warm-up
    must still run), only the downscale the networks see.
    """
    from PIL import Image

    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="PNG")
    data = buffer.getvalue()
    return decode_image(data, max_bytes=len(data), max_pixels=640 * 480, max_side=settings.analysis_max_side)
