"""One deadline for a whole analysis, even when FFmpeg never returns from a call.

The deadline is checked at every read of the clip and every frame, but a call into FFmpeg that blocks (a
decoder stuck on a hostile bitstream, a read that never comes back) never reaches the next check. So the work
that calls FFmpeg runs on a daemon thread of its own and the caller waits for it only until the deadline; then
the caller raises the deadline's :class:`~picmetric_core.errors.VideoTimedOut` and goes on (nothing is stored:
storing happens after the work, in the caller). The stuck thread is abandoned and logged: a daemon thread never
keeps the process from exiting, and once it comes back (if it does) its next deadline check ends it. Whatever it
does after it was abandoned is dropped: its result, its error and, through :meth:`DeadlineWatch.quiet`, its
progress reports.

A thread cannot be killed: an abandoned one keeps its memory and whatever CPU the stuck call spins on until the
call returns or the process ends.

Example:
    >>> watch = DeadlineWatch(Deadline(60))
    >>> watch.run(lambda: 6 * 7, "probing")
    42
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from picmetric_core.video.probe import Deadline

log = logging.getLogger(__name__)

T = TypeVar("T")


class DeadlineWatch:
    """Runs an analysis's FFmpeg work on daemon threads, each waited for only until the analysis's deadline."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self._abandoned = threading.Event()

    @property
    def abandoned(self) -> bool:
        """Whether a thread of this analysis was left running past the deadline."""
        return self._abandoned.is_set()

    def run(self, work: Callable[[], T], stage: str) -> T:
        """``work()``'s result (or its error), waited for until the deadline.

        Raises:
            VideoTimedOut: the deadline passed first; the thread running ``work`` is abandoned.
        """
        finished = threading.Event()
        outcome: list[tuple[bool, Any]] = []

        def target() -> None:
            try:
                outcome.append((True, work()))
            except BaseException as error:  # handed to the waiting caller, or logged once it stopped waiting
                outcome.append((False, error))
            finished.set()
            if self._abandoned.is_set():
                log.info("a video thread abandoned while %s has ended: %r", stage, outcome[0][1])

        thread = threading.Thread(target=target, name=f"picmetric-video-{stage}", daemon=True)
        thread.start()
        if not finished.wait(self.deadline.remaining()):
            self._abandoned.set()
            log.warning(
                "a video analysis passed its deadline of %g s while %s, inside a call that did not return; "
                "its thread %s is abandoned",
                self.deadline.seconds,
                stage,
                thread.name,
            )
            raise self.deadline.timed_out()
        succeeded, value = outcome[0]
        if succeeded:
            return value
        raise value

    def quiet(self, callback: Callable[..., None]) -> Callable[..., None]:
        """``callback``, silent once a thread was abandoned (a failed job must not show an abandoned thread's
        progress)."""

        def call(*args: Any) -> None:
            if not self._abandoned.is_set():
                callback(*args)

        return call
