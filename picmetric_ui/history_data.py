"""The History page's reads, cached for a short while and cleared as soon as a new analysis is stored or
analyses are deleted.

Every function takes the settings key, so a change of database or store never serves another one's rows.
"""

from __future__ import annotations

import streamlit as st

from picmetric_core.history import HistoryPage, HistoryQuery, LabelKind
from picmetric_core.store.history import LabelCount, TimeCount
from picmetric_core.submission import Submission
from picmetric_ui import resources

TTL_S = 30


def _key() -> str:
    return resources.settings_key(resources.settings())


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _history(settings_key: str, query: HistoryQuery) -> HistoryPage[Submission]:
    return resources.service().history(query)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _count(settings_key: str, query: HistoryQuery) -> int:
    return resources.service().count(query)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _label_frequencies(settings_key: str, kind: LabelKind, limit: int) -> list[LabelCount]:
    return resources.service().label_frequencies(kind, limit=limit)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _counts_over_time(settings_key: str) -> list[TimeCount]:
    return resources.service().counts_over_time()


def history(query: HistoryQuery) -> HistoryPage[Submission]:
    return _history(_key(), query)


def count(query: HistoryQuery) -> int:
    return _count(_key(), query)


def label_frequencies(kind: LabelKind, limit: int) -> list[LabelCount]:
    return _label_frequencies(_key(), kind, limit)


def counts_over_time() -> list[TimeCount]:
    return _counts_over_time(_key())


def clear() -> None:
    """Forget every cached read (called after a new analysis is stored, and after a delete)."""
    for cached in (_history, _count, _label_frequencies, _counts_over_time):
        cached.clear()
