"""Images in: an upload's bytes or a URL, through :func:`~picmetric_core.intake.intake` and the shared
service, into an :class:`Item` for the page.

URL fetches hold one of the server's fetch slots, as the API's do. Every failure becomes a message on
its own item, so the rest of a batch still completes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from picmetric_core.errors import PicMetricError
from picmetric_core.intake import Incoming, SourceKind, Upload, intake
from picmetric_core.submission import Submission
from picmetric_ui import history_data, resources

log = logging.getLogger(__name__)

UNEXPECTED_MESSAGE = "Something went wrong while analysing this image; it was logged. Try again, or try another image."

Report = Callable[[str], None]

STAGE_TEXT = {
    "storing": "storing the original",
    "classifier": "classifying (ImageNet)",
    "detector": "detecting objects (COCO)",
    "faces": "finding faces",
    "classifier done": "ImageNet classes ready",
    "detector done": "COCO objects ready",
    "faces done": "faces ready",
    "saving": "saving to the history",
}


@dataclass(frozen=True)
class Item:
    """One image of a batch as the page shows it: a result with its pixels, or a message."""

    name: str
    source: SourceKind
    submission: Submission | None = None
    rgb: np.ndarray | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.submission is not None


def analyze_upload(
    name: str, data: bytes, report: Report = lambda _: None, *, source: Literal["upload", "live"] = "upload"
) -> Item:
    """Decode and submit an uploaded file (or a frame of the live camera, stored with ``source="live"``)."""

    def run() -> tuple[Submission, np.ndarray]:
        report(f"Reading {name}")
        return _submit(name, intake(Upload(data, name, source), resources.settings()), report)

    return _guarded(name, source, run)


def analyze_url(url: str, report: Report = lambda _: None) -> Item:
    """Fetch (with every safety check of :func:`~picmetric_core.intake.fetch.fetch_url`, within the server's
    cap on fetches at once), decode and submit the image at ``url``."""

    def run() -> tuple[Submission, np.ndarray]:
        report(f"Fetching {url}")
        incoming = intake(url, resources.settings(), fetch_slots=resources.runtime().fetch_slots)
        return _submit(incoming.filename or url, incoming, report)

    return _guarded(url, "url", run)


def _submit(name: str, incoming: Incoming, report: Report) -> tuple[Submission, np.ndarray]:
    image = incoming.image
    service = resources.service()
    if not resources.warmup().done.is_set():
        report("Waiting for the models to finish loading…")
    report(f"{name}: {image.width}×{image.height}")
    submission = service.submit_incoming(incoming, on_stage=lambda stage: report(_stage_line(name, stage)))
    if submission.seen_before:
        report(f"{name}: seen before, showing the stored result")
    else:
        history_data.clear()  # the History page's cached reads no longer hold every analysis
        timings = submission.analysis.timings_ms
        report(
            f"{name}: classifier {timings.get('classifier', 0):.0f} ms, detector {timings.get('detector', 0):.0f} ms, "
            f"faces {timings.get('faces', 0):.0f} ms"
        )
    return submission, image.rgb


def _stage_line(name: str, stage: str) -> str:
    text = STAGE_TEXT.get(stage, stage)
    return f"{name}: {text}" if stage.endswith(" done") else f"{name}: {text}…"


def _guarded(name: str, source: SourceKind, run: Callable[[], tuple[Submission, np.ndarray]]) -> Item:
    started = time.perf_counter()
    try:
        submission, rgb = run()
    except PicMetricError as error:
        return Item(name, source, error=str(error), seconds=time.perf_counter() - started)
    except Exception:
        log.exception("analysing %s failed", name)
        return Item(name, source, error=UNEXPECTED_MESSAGE, seconds=time.perf_counter() - started)
    return Item(name, source, submission=submission, rgb=rgb, seconds=time.perf_counter() - started)


def parse_urls(text: str) -> list[str]:
    """Non-empty lines, in order, without repeats."""
    seen: dict[str, None] = {}
    for line in text.splitlines():
        if line.strip():
            seen.setdefault(line.strip(), None)
    return list(seen)
