"""Native libraries' log lines (TensorFlow, absl, CUDA probing) kept off a terminal's stderr.

TensorFlow's C++ start-up chatter is written straight to file descriptor 2, below Python, and
``TF_CPP_MIN_LOG_LEVEL`` does not silence all of it (absl's "before InitializeLog" lines, CUDA's
cuInit error on a machine without a GPU). Ray's driver writes its own (start-up notices, Ray Data's
execution plan, the core worker's warnings) to the same place. The CLI wraps network and Ray work in
:func:`native_stderr_to_log` so a user sees only results and errors; the lines go to the log at debug
level, or back to the terminal when the block fails unexpectedly (they are then the diagnosis).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from picmetric_core.errors import PicMetricError

log = logging.getLogger(__name__)


@contextmanager
def native_stderr_to_log() -> Iterator[TextIO]:
    """Inside, whatever is written to file descriptor 2 is captured, then logged at debug level.

    Python's own ``sys.stderr`` writes are captured too, so print errors after leaving the block. It
    yields the terminal's stderr, for what must still reach the user inside the block (a progress bar).
    An exception other than a :class:`PicMetricError` (whose message says it all) replays the captured
    lines on the terminal before it propagates.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding, errors="replace")
    failed = False
    with tempfile.TemporaryFile() as captured, terminal:
        os.dup2(captured.fileno(), 2)
        try:
            yield terminal
        except PicMetricError:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text and failed:
                print(text, file=sys.stderr)
            elif text:
                log.debug("native libraries said:\n%s", text)
