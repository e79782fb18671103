"""Exports of what a history filter shows: a CSV table, a COCO JSON dataset, a ZIP of the images.

Every export holds the analyses a :class:`~picmetric_core.history.HistoryQuery` finds (all its
pages, newest first) as a viewer sees them at :class:`~picmetric_core.filters.DisplayThresholds`:
objects above the detection threshold after NMS, faces above the face threshold, all stored classes.

- CSV: one row per class, object and face, with the image's columns repeated on each row.
- COCO: ``images``, the 80 ``categories`` under their official COCO ids plus ``face``, and
  ``annotations`` (boxes as ``[x, y, width, height]``; faces with their 5 landmarks as keypoints).
  ``file_name`` is the original's path inside the ZIP export.
- ZIP: each image's original and overlays under ``{md5}/``, with ``results.csv`` and
  ``annotations.json`` beside them; and the tracks of the clips History shows for the same label under
  ``videos/<video_id>/`` (:mod:`picmetric_core.video.history_export`; CSV and COCO hold photos only).
  An overlay never drawn before is drawn for the export (and kept in the store, as every link to it
  would; :meth:`PicMetricService.overlay`).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal

from pydantic import Field

from picmetric_core.errors import PicMetricError
from picmetric_core.filters import DEFAULT_THRESHOLDS, DisplayThresholds, shown
from picmetric_core.history import MAX_PAGE_SIZE, HistoryFilters, HistoryQuery, HistorySort
from picmetric_core.models.coco import COCO_CATEGORIES, COCO_IDS
from picmetric_core.overlays import OVERLAY_KINDS
from picmetric_core.results import LANDMARK_NAMES, Analysis, Box
from picmetric_core.service import PicMetricService
from picmetric_core.store.history import AnalysisRecord
from picmetric_core.store.objects import ObjectNotFound
from picmetric_core.video.history_export import videos_for, write_video_files
from picmetric_core.video.results import StoredVideo

ExportFormat = Literal["csv", "coco", "zip"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("csv", "coco", "zip")
MEDIA_TYPES: dict[ExportFormat, str] = {"csv": "text/csv", "coco": "application/json", "zip": "application/zip"}
FILE_EXTENSIONS: dict[ExportFormat, str] = {"csv": "csv", "coco": "json", "zip": "zip"}
# Past these, an export asks for narrower filters rather than building a response too large to hold.
MAX_ANALYSES: dict[ExportFormat, int] = {"csv": 20_000, "coco": 20_000, "zip": 2_000}

FACE_CATEGORY = {"id": 91, "name": "face", "supercategory": "person"}  # 91: no COCO object has it
CSV_COLUMNS = (
    "md5", "filename", "created_at", "width", "height", "kind", "rank", "label", "class_id", "score",
    "x1", "y1", "x2", "y2", *(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"),
)  # fmt: skip


class ExportFilters(HistoryFilters):
    """The history filters and the format: what ``GET /v1/analyses/export`` and ``picmetric export`` take."""

    format: ExportFormat = Field("csv", description="CSV, COCO JSON or a ZIP of originals and overlays")
    sort: HistorySort = Field("newest", description="Newest first, or by uniqueness on the map (as the gallery)")


class ExportTooLarge(PicMetricError):
    """More analyses match than one export holds."""

    status = 422


@dataclass(frozen=True)
class ExportItem:
    """One analysed image as the export shows it: its record and what is shown at the thresholds."""

    record: AnalysisRecord
    analysis: Analysis


def collect(
    service: PicMetricService,
    query: HistoryQuery,
    thresholds: DisplayThresholds = DEFAULT_THRESHOLDS,
    *,
    max_analyses: int = MAX_ANALYSES["csv"],
) -> tuple[ExportItem, ...]:
    """Every analysis ``query`` finds (all pages, in its sort order), filtered at ``thresholds``.

    Raises:
        ExportTooLarge: more than ``max_analyses`` match.
    """
    items: list[ExportItem] = []
    for submission in _every_match(service, query):
        if len(items) == max_analyses:
            raise ExportTooLarge(
                f"More than {max_analyses:,} analyses match: narrow the filters (dates, label, file name) "
                "and export in parts."
            )
        items.append(ExportItem(submission.record, shown(submission.analysis, thresholds)))
    return tuple(items)


def to_csv(items: tuple[ExportItem, ...]) -> bytes:
    """One row per class, object and face (UTF-8, a header row, readable by pandas and spreadsheets)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for item in items:
        image = {
            "md5": item.record.md5,
            "filename": item.record.filename or "",
            "created_at": item.record.created_at.isoformat(),
            "width": item.analysis.width,
            "height": item.analysis.height,
        }
        for rank, c in enumerate(item.analysis.classifications):
            writer.writerow(image | {"kind": "class", "rank": rank, "label": c.label, "class_id": c.class_id,
                                     "score": c.score})  # fmt: skip
        for d in item.analysis.detections:
            category = COCO_IDS.get(d.label, "")
            writer.writerow(image | {"kind": "object", "label": d.label, "class_id": category, "score": d.score}
                            | _corners(d.box))  # fmt: skip
        for f in item.analysis.faces:
            points = {f"{name}_{axis}": getattr(f.landmarks[name], axis) for name in LANDMARK_NAMES for axis in "xy"}
            writer.writerow(image | {"kind": "face", "label": "face", "score": f.score} | _corners(f.box) | points)
    return buffer.getvalue().encode("utf-8")


def to_coco(items: tuple[ExportItem, ...]) -> dict[str, Any]:
    """A COCO detection dataset (with results' ``score``) of the objects and faces shown."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, item in enumerate(items, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": item.record.keys.original,
                "width": item.analysis.width,
                "height": item.analysis.height,
                "date_captured": item.record.created_at.isoformat(),
                "md5": item.record.md5,
                "original_filename": item.record.filename,
                "classifications": [
                    {"label": c.label, "class_id": c.class_id, "score": c.score} for c in item.analysis.classifications
                ],
            }
        )
        for d in item.analysis.detections:
            if d.label in COCO_IDS:
                annotations.append(_annotation(len(annotations) + 1, image_id, COCO_IDS[d.label], d.box, d.score))
        for f in item.analysis.faces:
            annotation = _annotation(len(annotations) + 1, image_id, FACE_CATEGORY["id"], f.box, f.score)
            points = [f.landmarks[name] for name in LANDMARK_NAMES]
            # Visibility 2 ("labelled and visible"): MTCNN places every landmark it reports.
            annotation["keypoints"] = [value for p in points for value in (float(p.x), float(p.y), 2)]
            annotation["num_keypoints"] = len(points)
            annotations.append(annotation)
    categories = [{"id": c.id, "name": c.name, "supercategory": "object"} for c in COCO_CATEGORIES]
    categories.append(FACE_CATEGORY | {"keypoints": list(LANDMARK_NAMES), "skeleton": []})
    return {
        "info": {
            "description": "PicMetric export",
            "version": "1.0",
            "date_created": datetime.now(UTC).isoformat(),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def write_zip(
    items: tuple[ExportItem, ...], service: PicMetricService, target: BinaryIO, videos: Sequence[StoredVideo] = ()
) -> None:
    """Write the originals and overlays of ``items`` under ``{md5}/``, with ``results.csv`` and
    ``annotations.json``, as a ZIP into ``target`` (a file: images are not all held in memory).

    Overlays are the stored ones, at the default display thresholds; one never drawn is drawn now
    from the original and kept. An object missing from the store is left out and listed in ``missing.txt``.
    """
    missing: list[str] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item in items:
            keys = item.record.keys
            try:
                original: bytes | None = service.read_object(keys.original)
            except ObjectNotFound:
                original = None
                missing.append(keys.original)
            else:
                # Images are compressed already: storing them is as small and much faster.
                archive.writestr(keys.original, original, compress_type=zipfile.ZIP_STORED)
            for kind in OVERLAY_KINDS:
                key = getattr(keys, kind)
                try:
                    data = service.overlay(item.record.md5, kind, original=original)
                except ObjectNotFound:
                    missing.append(key)
                    continue
                archive.writestr(key, data, compress_type=zipfile.ZIP_STORED)
        archive.writestr("results.csv", to_csv(items))
        archive.writestr("annotations.json", json.dumps(to_coco(items), indent=1))
        write_video_files(archive, videos)
        if missing:
            archive.writestr("missing.txt", "\n".join(missing) + "\n")


def write_export(
    service: PicMetricService,
    query: HistoryQuery,
    export_format: ExportFormat,
    target: BinaryIO,
    thresholds: DisplayThresholds = DEFAULT_THRESHOLDS,
) -> None:
    """Write the export of ``query`` at ``thresholds`` in ``export_format`` into ``target``.

    Raises:
        ExportTooLarge: more analyses match than one export of this format holds.
    """
    items = collect(service, query, thresholds, max_analyses=MAX_ANALYSES[export_format])
    if export_format == "csv":
        target.write(to_csv(items))
    elif export_format == "coco":
        target.write(json.dumps(to_coco(items)).encode("utf-8"))
    else:
        write_zip(items, service, target, videos_for(service, query))


def export(
    service: PicMetricService,
    query: HistoryQuery,
    export_format: ExportFormat,
    thresholds: DisplayThresholds = DEFAULT_THRESHOLDS,
) -> bytes:
    """The export as bytes (small exports, tests); :func:`write_export` writes large ones to a file."""
    buffer = io.BytesIO()
    write_export(service, query, export_format, buffer, thresholds)
    return buffer.getvalue()


def file_name(export_format: ExportFormat, now: datetime | None = None) -> str:
    """A download name such as ``picmetric-20261203-0815.csv``."""
    moment = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M")
    return f"picmetric-{moment}.{FILE_EXTENSIONS[export_format]}"


def _every_match(service: PicMetricService, query: HistoryQuery) -> Iterator[Any]:
    page_query = replace(query, limit=MAX_PAGE_SIZE, page=1, cursor=None, with_total=False)
    while True:
        page = service.history(page_query)
        yield from page.items
        if page.next_cursor is None:
            return
        page_query = replace(page_query, cursor=page.next_cursor)


def _corners(box: Box) -> dict[str, float]:
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}


def _annotation(annotation_id: int, image_id: int, category_id: int, box: Box, score: float) -> dict[str, Any]:
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(box.x1), float(box.y1), float(box.width), float(box.height)],
        "area": float(box.area),
        "iscrowd": 0,
        "score": float(score),
    }
