"""Batch jobs over the API: start one on allowed folders or S3 prefixes, follow it, list them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from picmetric_core.api.deps import RuntimeDep
from picmetric_core.api.schemas import ERRORS, READ_ERRORS, BatchJobBody, BatchPageBody, ErrorBody
from picmetric_core.batch.jobs import BatchJob
from picmetric_core.batch.service import MAX_SOURCES
from picmetric_core.batch.sources import item_filename
from picmetric_core.text_filters import check_filter_text

router = APIRouter(prefix="/v1/batches", tags=["batches"])
MAX_SOURCE_CHARS = 1000
REFUSED = {403: {"model": ErrorBody, "description": "A source outside the allowed folders and buckets"}}


class BatchRequest(BaseModel):
    """Folders, ``s3://bucket/prefix`` locations or list files inside ``PICMETRIC_BATCH_ALLOWED_SOURCES``."""

    sources: list[Annotated[str, Field(min_length=1, max_length=MAX_SOURCE_CHARS)]] = Field(
        min_length=1, max_length=MAX_SOURCES
    )
    limit: Annotated[int | None, Field(ge=1, le=10_000_000)] = None


@router.post(
    "",
    status_code=202,
    response_model=BatchJobBody,
    response_model_exclude_unset=True,
    responses={**REFUSED, **ERRORS},
    summary="Start (or resume) a batch job",
)
def start_batch(runtime: RuntimeDep, body: BatchRequest, response: Response) -> dict[str, Any]:
    """202 with the job; re-posting the sources of an unfinished job resumes it (``resumed: true``)."""
    for source in body.sources:
        check_filter_text("batch source", source.strip(), max_chars=MAX_SOURCE_CHARS)
    try:
        started = runtime.launcher().start(body.sources, body.limit)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    response.headers["Location"] = f"/v1/batches/{started.job.id}"
    return job_view(started.job) | {"resumed": started.resumed}


@router.get(
    "",
    response_model=BatchPageBody,
    response_model_exclude_unset=True,
    responses=READ_ERRORS,
    summary="Batch jobs, newest first",
)
def list_batches(runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    return {"items": [job_view(job) for job in runtime.launcher().jobs.recent(limit)]}


@router.get(
    "/{job_id}",
    response_model=BatchJobBody,
    response_model_exclude_unset=True,
    responses={404: {"model": ErrorBody, "description": "No such job"}, **READ_ERRORS},
    summary="One batch job: status, counts and failed items",
)
def get_batch(runtime: RuntimeDep, job_id: Annotated[int, Path(ge=1, le=2**31 - 1)]) -> dict[str, Any]:
    jobs = runtime.launcher().jobs
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"There is no batch job {job_id}.")
    failures = [{"item": item_filename(f.item), "error": f.error} for f in jobs.failures(job_id)]
    return job_view(job) | {"failures": failures}


def job_view(job: BatchJob) -> dict[str, Any]:
    """A job as clients see it (items by file name only: no server paths)."""
    return {
        "id": job.id,
        "sources": list(job.sources),
        "status": job.status,
        "total": job.total,
        "done": job.done,
        "new": job.new,
        "seen": job.seen,
        "failed": job.failed,
        "near_duplicates": job.near_duplicates,
        "started_at": job.started_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "images_per_s": job.images_per_s,
        "error": job.error,
        "history": f"/v1/analyses?batch={job.id}",
    }
