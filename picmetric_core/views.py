"""Every JSON document PicMetric hands out, built in one place.

The API's v1 body, the app's "full JSON" download and the CLI's ``--json`` are the same document
(:func:`submission_document`, or :func:`full_view` for an analysis not stored); the old Flask API's
shape (:func:`legacy_view`) serves old clients and the app's "old API JSON" download. Results hold
Python numbers only, so :func:`to_json` needs no fallbacks.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from picmetric_core.filters import DEFAULT_THRESHOLDS, DisplayThresholds, shown
from picmetric_core.results import Analysis

if TYPE_CHECKING:
    from picmetric_core.store.history import AnalysisRecord
    from picmetric_core.submission import Submission

LEGACY_RESNET_TOP = 3
# The old API listed objects from 50 % (ImageAI's default); v1 and the UI show more.
LEGACY_THRESHOLDS = DisplayThresholds(min_detection_score=0.5)
NO_FACES = "no_faces"


def full_view(
    analysis: Analysis,
    *,
    thresholds: DisplayThresholds = DEFAULT_THRESHOLDS,
    urls: dict[str, str | None] | None = None,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything: raw results, what is shown at ``thresholds``, models, timings, links."""
    visible = shown(analysis, thresholds).to_dict()
    return {
        **analysis.to_dict(),
        "shown": {
            "thresholds": asdict(thresholds),
            "detections": visible["detections"],
            "faces": visible["faces"],
        },
        "urls": urls or {},
        "record": record or {},
    }


def record_view(record: AnalysisRecord) -> dict[str, Any]:
    """Where a stored image came from and where its objects are; the time as ISO 8601."""
    return asdict(record) | {"created_at": record.created_at.isoformat()}


def submission_document(
    submission: Submission,
    *,
    thresholds: DisplayThresholds = DEFAULT_THRESHOLDS,
    urls: dict[str, str | None] | None = None,
    uniqueness: float | None = None,
) -> dict[str, Any]:
    """A stored analysis as the API's v1 body and the app's full download give it.

    Args:
        submission: the stored analysis.
        thresholds: what ``shown`` is filtered at.
        urls: links to the objects; the store's own links (None for a local store) by default. The API
            passes links to its ``/objects`` route instead of None.
        uniqueness: its uniqueness on the History map (``None``: not on it, or not asked for).
    """
    links = urls if urls is not None else asdict(submission.urls)
    document = full_view(submission.analysis, thresholds=thresholds, urls=links, record=record_view(submission.record))
    near_duplicates = [asdict(duplicate) for duplicate in submission.near_duplicates]
    extra = {"seen_before": submission.seen_before, "near_duplicates": near_duplicates, "uniqueness": uniqueness}
    return document | extra


def legacy_view(
    analysis: Analysis,
    *,
    original_url: str,
    detections_url: str,
    faces_url: str,
    thresholds: DisplayThresholds = LEGACY_THRESHOLDS,
    error: str = "",
) -> dict[str, str | None]:
    """The old API's response: ``resnet``/``yolov3`` are JSON strings, as old clients parse them.

    The old API reported probabilities for ResNet and percentages for YOLO, with underscores in
    ImageNet names (``studio_couch``), official COCO names (``potted plant``), objects from 50 % and
    ``null`` for ``yolov3`` when it found none; all of that is kept.
    """
    visible = shown(analysis, thresholds)
    resnet = {
        c.label.replace(" ", "_"): str(c.score) for c in analysis.classifications[:LEGACY_RESNET_TOP]
    }
    yolo: dict[str, float] = {}
    for det in visible.detections:
        yolo[det.label] = max(yolo.get(det.label, 0.0), det.score * 100)
    return {
        "error": error,
        "faces_source": faces_url if visible.faces else NO_FACES,
        "hash": analysis.md5,
        "original": original_url,
        "resnet": json.dumps(resnet),
        "yolov3": json.dumps({label: str(score) for label, score in yolo.items()}) if yolo else None,
        "yolov3_source": detections_url,
    }


def legacy_submission_document(
    submission: Submission,
    *,
    thresholds: DisplayThresholds = LEGACY_THRESHOLDS,
    urls: dict[str, str | None] | None = None,
) -> dict[str, str]:
    """:func:`legacy_view` of a stored analysis; an object without a link is named by its key."""
    links = urls if urls is not None else asdict(submission.urls)
    keys = asdict(submission.record.keys)
    where = {name: links.get(name) or keys[name] for name in ("original", "detections", "faces")}
    return legacy_view(
        submission.analysis,
        original_url=where["original"],
        detections_url=where["detections"],
        faces_url=where["faces"],
        thresholds=thresholds,
    )


def cli_document(source: str, analysis: Analysis | None = None, error: str | None = None) -> dict[str, Any]:
    """One input of ``picmetric analyze --json``: its full view, or the error it met.

    >>> cli_document("missing.jpg", error="No such file.")
    {'input': 'missing.jpg', 'error': 'No such file.'}
    """
    if analysis is None:
        return {"input": source, "error": error or ""}
    return {"input": source, **full_view(analysis)}


def to_json(document: Any, *, indent: int | None = None) -> str:
    """``document`` as JSON text: compact by default, indented for files people read.

    >>> to_json({"score": 0.5, "labels": ["dog"]})
    '{"score":0.5,"labels":["dog"]}'
    """
    if indent is None:
        return json.dumps(document, separators=(",", ":"))
    return json.dumps(document, indent=indent)
