"""The examples in the pure modules' docstrings run, so they cannot rot (no networks, no servers)."""

from __future__ import annotations

import doctest
import importlib

import pytest

PURE_MODULES = [
    "picmetric_core.addresses",
    "picmetric_core.api.app",
    "picmetric_core.config",
    "picmetric_core.delete_cli",
    "picmetric_core.filters",
    "picmetric_core.formats",
    "picmetric_core.history",
    "picmetric_core.intake.images",
    "picmetric_core.models.engines",
    "picmetric_core.models.fidelity",
    "picmetric_core.models.pyramid_mosaic",
    "picmetric_core.nms",
    "picmetric_core.overlays",
    "picmetric_core.store.database",
    "picmetric_core.store.locks",
    "picmetric_core.store.objects",
    "picmetric_core.text_filters",
    "picmetric_core.views",
    "picmetric_ui.serving",
    "picmetric_ui.sign_in",
]


@pytest.mark.parametrize("name", PURE_MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples left to run"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see the output above)"
