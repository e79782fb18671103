"""What one server shares between sessions: its :class:`~picmetric_core.runtime.Runtime` (settings, the
service, the model loader, the batch launcher, the URL fetch slots).

The runtime comes from :func:`~picmetric_core.runtime.shared_runtime`, one per process and settings,
shared by every session and thread; each of its objects is thread-safe. The networks load through
the same :class:`~picmetric_core.lifecycle.ModelLoader` as the API's.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from streamlit.runtime.scriptrunner import script_runner

from picmetric_core.config import Settings, get_settings
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.runtime import Runtime, shared_runtime
from picmetric_core.runtime import settings_key as settings_key
from picmetric_core.service import PicMetricService

if TYPE_CHECKING:
    from picmetric_core.batch.service import BatchLauncher


def _clean_modules_but_keras() -> None:
    """Streamlit's after-run clean-up, less its ``keras.backend.clear_session()``.

    Streamlit clears Keras' session after every script run. That resets Keras' layer-name counters
    while the networks are being built in the background (seen: "The name "max_pooling2d" is used 2
    times in the model", the models never loaded) and drops TensorFlow's kernel cache for networks
    that serve every session. PicMetric's networks live for the whole server, so the session stays.
    """
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


script_runner._clean_problem_modules = _clean_modules_but_keras


def settings() -> Settings:
    """The same settings as the API and the CLI (``PICMETRIC_*`` environment and ``.env``)."""
    return get_settings()


def _loader(current: Settings) -> ModelLoader:
    # The app warms the networks up once loaded, so the first photo does not pay for compiling them.
    return ModelLoader(current, warm_up=True)


def runtime() -> Runtime:
    """The server's runtime for the current settings (a new one when they change)."""
    return shared_runtime(settings(), loader_factory=_loader)


def warmup() -> ModelLoader:
    """The server's model loader, started on the first call (it never blocks the page).

    Pages read ``done`` (an event), ``ready``, ``error`` and ``seconds`` from it.
    """
    return runtime().loader.start()


def service() -> PicMetricService:
    """The shared service (raises ``DatabaseUnavailable`` or ``StoreUnavailable`` if it cannot start)."""
    return runtime().service()


def launcher() -> BatchLauncher:
    """The server's one batch launcher (jobs run one after another on its background thread)."""
    return runtime().launcher()
