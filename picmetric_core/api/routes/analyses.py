"""The v1 endpoints: analyse an image, list, read and delete past analyses, serve stored objects, health."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from picmetric_core.api.deps import RuntimeDep, ThresholdsDep
from picmetric_core.api.routes.links import object_urls
from picmetric_core.api.schemas import (
    ERRORS,
    READ_ERRORS,
    AnalysisBody,
    AnalysisPageBody,
    DeletedBody,
    DeleteRequest,
    ErrorBody,
)
from picmetric_core.api.submit import submit_upload, submit_url
from picmetric_core.filters import DisplayThresholds
from picmetric_core.history import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, HistoryFilters, HistorySort
from picmetric_core.submission import Submission
from picmetric_core.views import submission_document

router = APIRouter(prefix="/v1/analyses", tags=["analyses"])


@router.post(
    "",
    status_code=201,
    response_model=AnalysisBody,
    responses={
        200: {"model": AnalysisBody, "description": "The image was analysed before: its stored analysis"},
        **ERRORS,
    },
    summary="Analyse an uploaded image or the image at a URL",
)
def create_analysis(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    shown: ThresholdsDep,
    file: Annotated[UploadFile | None, File(description="The image (or give url)")] = None,
    url: Annotated[str | None, Form(description="The image's address (or give file)")] = None,
) -> dict[str, Any]:
    """The full results; ``seen_before`` is true (and the status 200) when no network ran for this call."""
    if (file is None) == (url is None):
        raise HTTPException(422, "Send exactly one of: a file (multipart field `file`) or a `url` form field.")
    submission = submit_upload(runtime, file) if file is not None else submit_url(runtime, url or "")
    response.status_code = 200 if submission.seen_before else 201
    return _full(request, submission, shown, runtime.service().uniqueness(submission.record.md5))


@router.get("", response_model=AnalysisPageBody, responses=READ_ERRORS, summary="Past analyses, newest first")
def list_analyses(
    request: Request,
    runtime: RuntimeDep,
    shown: ThresholdsDep,
    filters: Annotated[HistoryFilters, Query()],
    sort: Annotated[
        HistorySort,
        Query(description="`newest` first, or by uniqueness on the map: `most_unique` (outliers) or `least_unique`"),
    ] = "newest",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the page before")] = None,
    with_total: bool = False,
) -> dict[str, Any]:
    """The analyses the filters find, a page at a time, newest first or in ``sort``'s order (photos not on the
    map last); ``min_face_score`` (a display threshold) also counts faces for the face filters."""
    try:
        query = filters.query(
            min_face_score=shown.min_face_score,
            sort=sort,
            limit=limit,
            page=page,
            cursor=cursor,
            with_total=with_total,
        )
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    service = runtime.service()
    result = service.history(query)
    uniqueness = service.uniqueness_of([item.record.md5 for item in result.items])
    return {
        "items": [_full(request, item, shown, uniqueness.get(item.record.md5)) for item in result.items],
        "next_cursor": result.next_cursor,
        "page": result.page,
        "limit": result.limit,
        "total": result.total,
    }


@router.get(
    "/{md5:md5}",
    response_model=AnalysisBody,
    responses={404: {"model": ErrorBody, "description": "Never analysed"}, **READ_ERRORS},
    summary="The stored analysis of one image",
)
def get_analysis(request: Request, runtime: RuntimeDep, md5: str, shown: ThresholdsDep) -> dict[str, Any]:
    submission = runtime.service().get(md5)
    if submission is None:
        raise HTTPException(404, f"No analysis of an image with md5 {md5}.")
    return _full(request, submission, shown, runtime.service().uniqueness(md5))


@router.delete(
    "/{md5:md5}",
    status_code=204,
    responses={404: {"model": ErrorBody, "description": "Never analysed, or deleted already"}, **ERRORS},
    summary="Delete one analysis and everything stored for it",
)
def delete_analysis(runtime: RuntimeDep, md5: str) -> Response:
    """The analysis, its classes, objects, faces and signature, and its original, thumbnail, overlays and stored
    JSON. A store or database that is down answers 503 and nothing is deleted; a store that fails midway leaves
    objects that the next delete removes (nothing shows them)."""
    if not runtime.service().delete([md5]).deleted:
        raise HTTPException(404, f"No analysis of an image with md5 {md5}.")
    return Response(status_code=204)


@router.post("/delete", response_model=DeletedBody, responses=ERRORS, summary="Delete every analysis a filter finds")
def delete_analyses(runtime: RuntimeDep, body: DeleteRequest) -> dict[str, Any]:
    """The filters of ``GET /v1/analyses`` (without paging: every match goes) as a JSON body. An empty body
    is refused; ``"all": true`` deletes every analysis. ``dry_run`` only answers which would go. The video clips
    the filters select go too, each whole (``video_ids``)."""
    if not body.filtered and not body.all:
        raise HTTPException(422, 'Give at least one filter, or "all": true to delete every analysis.')
    try:
        query = body.query()
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    result = runtime.service().delete_matching(query, dry_run=body.dry_run)
    videos = runtime.videos()
    video_ids = [video_id for video_id in videos.matching(query) if body.dry_run or videos.delete(video_id)]
    return {
        "deleted": len(result.deleted),
        "md5s": list(result.deleted),
        "dry_run": result.dry_run,
        "pending_objects": result.pending_objects,
        "video_ids": video_ids,
    }


def _full(
    request: Request, submission: Submission, thresholds: DisplayThresholds, uniqueness: float | None
) -> dict[str, Any]:
    """The v1 body, with the photo's uniqueness on the map (read by the caller: one query per page)."""
    return submission_document(
        submission, thresholds=thresholds, urls=object_urls(request, submission), uniqueness=uniqueness
    )
