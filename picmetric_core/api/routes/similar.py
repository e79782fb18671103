"""``GET /v1/analyses/{md5}/similar``: the stored photos most like one in content ("more like this")."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.exceptions import HTTPException

from picmetric_core.api.deps import RuntimeDep
from picmetric_core.api.routes.links import object_urls
from picmetric_core.api.schemas import READ_ERRORS, ErrorBody, SimilarBody
from picmetric_core.submission import SimilarPhoto

MAX_SIMILAR = 48

router = APIRouter(prefix="/v1/analyses", tags=["analyses"])


@router.get(
    "/{md5:md5}/similar",
    response_model=SimilarBody,
    responses={
        404: {"model": ErrorBody, "description": "Never analysed"},
        409: {"model": ErrorBody, "description": "Analysed before similar photos were indexed"},
        **READ_ERRORS,
    },
    summary="The stored photos most like this one in content, most similar first",
)
def similar_analyses(
    request: Request,
    runtime: RuntimeDep,
    md5: str,
    limit: Annotated[int, Query(ge=1, le=MAX_SIMILAR)] = 12,
) -> dict[str, Any]:
    """``items``: each photo's md5, ``similarity`` (cosine of the classifier's embeddings, 1 = same content),
    file name, date, top class and links; ``near_duplicates``: stored photos that are the same picture."""
    service = runtime.service()
    found = service.similar(md5, k=limit)
    if found is None:
        if service.get(md5) is None:
            raise HTTPException(404, f"No analysis of an image with md5 {md5}.")
        raise HTTPException(
            409, "This photo was analysed before similar photos were indexed; an administrator can run "
            "`picmetric similar backfill` to index it."
        )
    near = service.near_duplicates(md5) or []
    return {
        "md5": md5,
        "items": [_item(request, photo) for photo in found],
        "near_duplicates": [{"md5": d.md5, "distance": d.distance} for d in near],
    }


def _item(request: Request, photo: SimilarPhoto) -> dict[str, Any]:
    record = photo.submission.record
    top = photo.submission.analysis.classifications[:1]
    return {
        "md5": record.md5,
        "similarity": photo.similarity,
        "filename": record.filename,
        "created_at": record.created_at.isoformat(),
        "top_class": top[0].label if top else None,
        "urls": object_urls(request, photo.submission),
    }
