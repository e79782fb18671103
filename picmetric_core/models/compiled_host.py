"""Host-side loops compiled by numba where it is installed (not on the GPU machine's Python).

Compiled once and kept beside the module (``cache=True``); the GIL is released inside, so a kernel runs
beside the networks' threads.
"""

from __future__ import annotations

from collections.abc import Callable

try:
    import numba
except ImportError:  # the callers fall back to numpy / OpenCV
    numba = None


def host_kernel(function: Callable) -> Callable | None:
    """``function`` compiled by numba, or None where numba is not installed."""
    if numba is None:
        return None
    return numba.njit(cache=True, nogil=True)(function)
