"""``GET /v1/analyses/export``: what a history filter shows, as CSV, COCO JSON or a ZIP of the images."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from picmetric_core import exports
from picmetric_core.api.deps import RuntimeDep, ThresholdsDep
from picmetric_core.api.schemas import READ_ERRORS
from picmetric_core.filters import DEFAULT_THRESHOLDS
from picmetric_core.store.history import HistoryQuery

router = APIRouter(tags=["v1"])


class ExportFilters(BaseModel):
    """The history filters of ``GET /v1/analyses`` (without paging: an export holds every match)."""

    format: exports.ExportFormat = "csv"
    label: str | None = Field(None, max_length=200, description="An ImageNet or COCO label")
    label_kind: Literal["classifier", "detector"] | None = None
    min_score: float = Field(DEFAULT_THRESHOLDS.min_detection_score, ge=0, le=1, description="For `label`")
    has_faces: bool | None = None
    min_faces: int | None = Field(None, ge=0, le=10_000)
    max_faces: int | None = Field(None, ge=0, le=10_000)
    since: datetime | None = Field(None, description="ISO 8601 with a timezone")
    until: datetime | None = Field(None, description="ISO 8601 with a timezone")
    filename: str | None = Field(None, max_length=255, description="Part of the file name")
    md5: str | None = Field(None, pattern=r"^[0-9a-fA-F]{1,32}$", description="An md5 or its start")


@router.get(
    "/v1/analyses/export",
    responses={
        200: {"content": {media: {} for media in exports.MEDIA_TYPES.values()}, "description": "The export"},
        **READ_ERRORS,
    },
    summary="Export what a history filter shows: CSV, COCO JSON or a ZIP of originals and overlays",
)
def export_analyses(
    runtime: RuntimeDep, filters: Annotated[ExportFilters, Query()], shown: ThresholdsDep
) -> Response:
    """Every analysis the filters find, at the display thresholds (``min_detection_score``, ``nms_iou``,
    ``min_face_score``; the last also counts faces for the face filters)."""
    try:
        query = HistoryQuery(
            **filters.model_dump(exclude={"format", "md5"}),
            md5=filters.md5.lower() if filters.md5 else None,
            min_face_score=shown.min_face_score,
        )
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    body = exports.export(runtime.service(), query, filters.format, shown)
    name = exports.file_name(filters.format)
    return Response(
        body,
        media_type=exports.MEDIA_TYPES[filters.format],
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )
