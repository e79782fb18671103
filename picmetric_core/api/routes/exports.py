"""``GET /v1/analyses/export``: what a history filter shows, as CSV, COCO JSON or a ZIP of the images."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from picmetric_core import exports
from picmetric_core.api.deps import RuntimeDep, ThresholdsDep
from picmetric_core.api.schemas import READ_ERRORS
from picmetric_core.exports import ExportFilters

SPOOL_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024

router = APIRouter(prefix="/v1/analyses", tags=["analyses"])


@router.get(
    "/export",
    responses={
        200: {"content": {media: {} for media in exports.MEDIA_TYPES.values()}, "description": "The export"},
        **READ_ERRORS,
    },
    summary="Export what a history filter shows: CSV, COCO JSON or a ZIP of originals and overlays",
)
def export_analyses(runtime: RuntimeDep, filters: Annotated[ExportFilters, Query()], shown: ThresholdsDep) -> Response:
    """Every analysis the filters of ``GET /v1/analyses`` find (without paging: an export holds every match), at
    the display thresholds (``min_detection_score``, ``nms_iou``, ``min_face_score``; the last also counts faces
    for the face filters)."""
    try:
        query = filters.query(min_face_score=shown.min_face_score, sort=filters.sort)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    # A ZIP of many originals does not fit in memory: past SPOOL_BYTES the export goes to a temporary file.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed when sent)
    try:
        exports.write_export(runtime.service(), query, filters.format, spool, shown)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    name = exports.file_name(filters.format)
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "Content-Length": str(size),
        "Cache-Control": "no-store",
    }
    return StreamingResponse(_chunks(spool), media_type=exports.MEDIA_TYPES[filters.format], headers=headers)


def _chunks(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(CHUNK_BYTES):
            yield chunk
