"""Native libraries' log lines (TensorFlow, absl, CUDA probing) kept off a terminal's stderr.

TensorFlow's C++ start-up chatter is written straight to file descriptor 2, below Python, and
``TF_CPP_MIN_LOG_LEVEL`` does not silence all of it (absl's "before InitializeLog" lines, CUDA's
cuInit error on a machine without a GPU). The CLI wraps network work in :func:`native_stderr_to_log`
so a user sees only results and errors; the lines go to the log at debug level.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Inside, whatever is written to file descriptor 2 is captured, then logged at debug level.

    Python's own ``sys.stderr`` writes are captured too, so print errors after leaving the block.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text:
                log.debug("native libraries said:\n%s", text)
