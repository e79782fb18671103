"""The bodies the API documents in ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """Every error: a message fit for a person."""

    error: str


class LegacyResponse(BaseModel):
    """The old Flask API's response, field for field (``resnet`` and ``yolov3`` are JSON strings;
    ``yolov3`` is ``null`` when no object reaches 50 %)."""

    error: str
    hash: str
    original: str
    resnet: str
    yolov3: str | None
    yolov3_source: str
    faces_source: str


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "The image is damaged or truncated",
        401: "A bearer token is required (PICMETRIC_API_TOKEN is set)",
        413: "The image is too large (bytes or pixels)",
        415: "Not a supported image",
        422: "A refused or unreachable URL, or invalid parameters",
        503: "The store, the database or the networks are not available",
    }.items()
}
READ_ERRORS = {status: ERRORS[status] for status in (422, 503)}
