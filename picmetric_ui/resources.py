"""Objects built once per server and shared by every session: settings, the service, the warm-up.

``st.cache_resource`` values are shared by all sessions and threads; each one here is thread-safe.
The networks load through the same :class:`~picmetric_core.lifecycle.ModelLoader` as the API's.
"""

from __future__ import annotations

import sys

import streamlit as st
from streamlit.runtime.scriptrunner import script_runner

from picmetric_core.config import Settings, get_settings
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.service import PicMetricService


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


def settings_key(current: Settings) -> str:
    """A cache key that changes when the data, database, store or models configuration does."""
    return current.model_dump_json()


@st.cache_resource(show_spinner=False)
def _loader(key: str) -> ModelLoader:
    return ModelLoader(settings(), warm_up=True)


def warmup() -> ModelLoader:
    """The server's model loader, started on the first call (it never blocks the page).

    Pages read ``done`` (an event), ``ready``, ``error`` and ``seconds`` from it.
    """
    return _loader(settings_key(settings())).start()


@st.cache_resource(show_spinner=False)
def _service(key: str) -> PicMetricService:
    # The loader is the service's analyzer: history pages never wait for the networks.
    return PicMetricService(settings(), _loader(key))


def service() -> PicMetricService:
    """The shared service (raises ``DatabaseUnavailable`` or ``StoreUnavailable`` if it cannot start)."""
    return _service(settings_key(settings()))
