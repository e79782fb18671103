"""``GET /objects/{key}``: stored images and overlays, for a local store (whose objects have no links).

An overlay that was never drawn is drawn on its first request and kept under its key
(:meth:`PicMetricService.overlay`), so the keys of every analysis answer, old and new.
"""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from picmetric_core.api.deps import RuntimeDep
from picmetric_core.api.schemas import ERRORS, ErrorBody
from picmetric_core.formats import ORIGINAL_EXTENSIONS
from picmetric_core.overlays import OVERLAY_KINDS
from picmetric_core.store.objects import ObjectNotFound, content_type_of

OBJECT_KEY = re.compile(
    rf"[0-9a-f]{{32}}/(?:original\.(?:{'|'.join(ORIGINAL_EXTENSIONS)})|detections\.png|faces\.png|thumb\.jpg)"
)
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}

router = APIRouter(prefix="/objects", tags=["objects"])


@router.get("/{key:path}", responses={404: {"model": ErrorBody}, 503: ERRORS[503]}, summary="A stored object")
def get_object(runtime: RuntimeDep, key: str) -> Response:
    """A stored image or overlay by its key."""
    if not OBJECT_KEY.fullmatch(key) or not runtime.service().is_stored(key[:32]):  # deleted: never shown
        raise HTTPException(404, "No such object.")
    md5, name = key.split("/")
    overlay = next((kind for kind in OVERLAY_KINDS if name == f"{kind}.png"), None)
    try:
        data = runtime.service().overlay(md5, overlay) if overlay else runtime.service().read_object(key)
    except ObjectNotFound:
        raise HTTPException(404, "No such object.") from None
    return Response(data, media_type=content_type_of(key), headers=IMMUTABLE)
