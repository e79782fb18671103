"""The networks' lifetime: loaded once, in the background, and waited for by whoever needs them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

from picmetric_core.config import Settings
from picmetric_core.errors import PicMetricError, without_paths
from picmetric_core.intake.images import DecodedImage
from picmetric_core.pipeline import StageCallback
from picmetric_core.results import Analysis

log = logging.getLogger(__name__)

# A request for an analysis waits this long for the networks to finish loading before a 503.
MODELS_WAIT_S = 300.0


class ModelsNotReady(PicMetricError):
    """The networks are still loading, or failed to load."""

    status = 503


class ModelLoader:
    """Loads the networks once, in a background thread, and hands analyses to them when ready.

    It is the service's analyzer: lookups and history work while it loads, and an analysis waits
    (up to ``wait_s``) for the networks instead of failing.
    """

    def __init__(
        self, settings: Settings, load: Callable[[Settings], Any] | None = None, wait_s: float = MODELS_WAIT_S
    ):
        self.settings = settings
        self._load = load
        self._wait_s = wait_s
        self._done = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._analyzer: Any = None
        self._error: str | None = None

    def start(self) -> None:
        """Start loading (once; later calls do nothing)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="picmetric-model-load", daemon=True)
                self._thread.start()

    @property
    def state(self) -> Literal["loading", "ready", "failed"]:
        if not self._done.is_set():
            return "loading"
        return "failed" if self._error is not None else "ready"

    def describe(self) -> dict[str, Any]:
        """What ``/healthz`` reports about the networks."""
        report: dict[str, Any] = {"state": self.state}
        if self._error is not None:
            report["error"] = without_paths(self._error)
        if self._analyzer is not None:
            report["models"] = [asdict(info) for info in self._analyzer.models]
            report["load_seconds"] = dict(self._analyzer.load_seconds)
        return report

    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis:
        self.start()
        if not self._done.wait(self._wait_s):
            raise ModelsNotReady("The networks are still loading; try again in a minute.")
        if self._error is not None:
            raise ModelsNotReady(f"The networks could not be loaded: {self._error}")
        return self._analyzer.analyze(image, on_stage=on_stage)

    def _run(self) -> None:
        try:
            load = self._load
            if load is None:
                from picmetric_core.pipeline import get_analyzer

                load = get_analyzer
            self._analyzer = load(self.settings)
            log.info("networks ready: %s", ", ".join(info.name for info in self._analyzer.models))
        except Exception as error:
            log.exception("loading the networks failed")
            self._error = str(error) or type(error).__name__
        finally:
            self._done.set()
