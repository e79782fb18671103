"""Video files over the API (issue #23): start an analysis (202 and a job id), follow it, read the result.

``POST /v1/videos`` takes a multipart ``file`` or a form ``url`` (every fetch rule of photos, the video byte
limit), and optionally ``sample_fps`` and a counting ``line`` as ``x1,y1,x2,y2`` in the clip's pixels. The clip
is checked (container, codec, limits) before the answer, so a bad clip is a 4xx at once; the analysis runs in
the background. ``GET /v1/videos/{id}`` takes the job id (state, stage, progress, frames done, and the result
when done) or a video id (the stored result). The token and the request limits apply as for photos.

``GET /v1/videos/{id}/{original|annotated|poster|tracks}`` is a stable object link like a photo's
(:mod:`picmetric_core.api.routes.links`): with the token set, the links the API hands out carry a ``sig``, so
a ``<video src>`` or ``<img src>`` opens them without the bearer header. Served from a local store, a link
answers a ``Range`` request with just those bytes (206), which browsers' players ask for (Safari's always).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from picmetric_core.api.access import SELF_CHECKED
from picmetric_core.api.deps import RuntimeDep
from picmetric_core.api.routes.links import check_link_access, public_base_url, signed_link
from picmetric_core.api.schemas import ERRORS, READ_ERRORS, ErrorBody
from picmetric_core.errors import VideoTooLarge
from picmetric_core.intake.images import format_size
from picmetric_core.results import Point
from picmetric_core.store.objects import ObjectNotFound
from picmetric_core.text_filters import check_filter_text
from picmetric_core.video.results import CountingLine, StoredVideo, VideoJob
from picmetric_core.video.store import content_type_of

router = APIRouter(prefix="/v1/videos", tags=["videos"])
OBJECT_KINDS = ("original", "annotated", "poster", "tracks")
NOT_FOUND = {404: {"model": ErrorBody, "description": "No such job or video"}}
_COPY_CHUNK = 1 << 20
BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def parse_line(text: str | None) -> CountingLine | None:
    """``"x1,y1,x2,y2"`` (clip pixels) as a counting line; ``None`` for nothing.

    Example:
        >>> parse_line("320,0,320,360")
        CountingLine(start=Point(x=320.0, y=0.0), end=Point(x=320.0, y=360.0))
    """
    if text is None or not text.strip():
        return None
    try:
        x1, y1, x2, y2 = (float(part) for part in text.split(","))
    except ValueError:
        raise HTTPException(422, "line: give four numbers, x1,y1,x2,y2, in the clip's pixels.") from None
    if (x1, y1) == (x2, y2):
        raise HTTPException(422, "line: its two ends must differ.")
    return CountingLine(Point(x1, y1), Point(x2, y2))


@router.post(
    "",
    status_code=202,
    responses={**ERRORS, **NOT_FOUND},
    summary="Analyse an uploaded clip or the clip at a URL (in the background)",
)
def create_video(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[UploadFile | None, File(description="The clip (or give url)")] = None,
    url: Annotated[str | None, Form(description="The clip's address (or give file)")] = None,
    sample_fps: Annotated[float | None, Form(gt=0, le=30, description="Frames a second for the networks")] = None,
    line: Annotated[str | None, Form(max_length=100, description="Counting line x1,y1,x2,y2")] = None,
) -> dict[str, Any]:
    """202 with the job: poll ``links.self`` until ``state`` is ``done`` (or ``failed``, with ``error``)."""
    if (file is None) == (url is None):
        raise HTTPException(422, "Send exactly one of: a file (multipart field `file`) or a `url` form field.")
    counting = parse_line(line)
    videos = runtime.videos()
    if file is not None:
        path = _spooled_to_disk(file, videos.limits.max_bytes)
        try:
            videos.probe(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        job_id = videos.submit(path, file.filename or "video", line=counting, sample_fps=sample_fps, discard=True)
    else:
        data, name = videos.fetch(url or "")
        videos.probe(data)
        job_id = videos.submit(
            data, name, line=counting, sample_fps=sample_fps, source="url", source_url=(url or "").strip()
        )
    job = videos.job(job_id)
    assert job is not None
    return job_view(request, runtime, job)


@router.get("", responses=READ_ERRORS, summary="Stored videos, newest first")
def list_videos(
    request: Request,
    runtime: RuntimeDep,
    label: Annotated[
        list[str] | None, Query(max_length=20, description="Classes any of whose tracks a video has")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> dict[str, Any]:
    videos = runtime.videos()
    labels = [check_filter_text("label filter", text) for text in label or []]
    items = videos.list(labels=labels, limit=limit, offset=offset)
    return {"items": [_document(request, runtime, item) for item in items], "limit": limit, "offset": offset}


@router.get("/{video_or_job}", responses={**READ_ERRORS, **NOT_FOUND}, summary="A job's progress, or a stored video")
def get_video(request: Request, runtime: RuntimeDep, video_or_job: str) -> dict[str, Any]:
    videos = runtime.videos()
    if video_or_job.startswith("job_"):
        job = videos.job(video_or_job)
        if job is None:
            raise HTTPException(404, f"No video job {video_or_job[:40]} (finished jobs are forgotten after a while).")
        return job_view(request, runtime, job)
    stored = videos.get(_video_id(video_or_job))
    if stored is None:
        raise HTTPException(404, f"No video with id {video_or_job[:40]}.")
    return _document(request, runtime, stored)


@router.get(
    "/{video_id}/{kind}",
    openapi_extra=SELF_CHECKED,
    responses={
        206: {"description": "The byte range asked for"},
        307: {"description": "A fresh link to the object in the bucket"},
        **READ_ERRORS,
        **NOT_FOUND,
    },
    summary="One of a video's stored objects, by a link that never expires",
)
def video_object(
    request: Request,
    runtime: RuntimeDep,
    video_id: str,
    kind: str,
    sig: Annotated[str | None, Query(max_length=64, description="The link's signature (with a token)")] = None,
) -> Response:
    """``original``, ``annotated`` (MP4), ``poster`` (JPEG) or ``tracks`` (JSON): the bytes, or a fresh link (S3).

    The bearer token, or the ``sig`` of the link the API gave, opens it."""
    check_link_access(runtime.settings, request, video_id, _signed_kind(kind), sig)
    if kind not in OBJECT_KINDS:
        raise HTTPException(404, f"No such object: {kind[:20]} (one of {', '.join(OBJECT_KINDS)}).")
    videos = runtime.videos()
    row = videos.store().find(_video_id(video_id))
    if row is None:
        raise HTTPException(404, f"No video with id {video_id[:40]}.")
    key = {
        "original": row.original_key,
        "annotated": row.annotated_key,
        "poster": row.poster_key,
        "tracks": row.tracks_key,
    }[kind]
    if key is None:
        raise HTTPException(404, f"This video has no {kind}.")
    link = videos.store().store.url(key)
    if link is not None:
        return RedirectResponse(link, status_code=307, headers={"Cache-Control": "no-store"})
    try:
        data = videos.read(key)
    except ObjectNotFound:
        raise HTTPException(404, f"This video's {kind} is not in the store.") from None
    return byte_range_response(data, content_type_of(key), request.headers.get("range"))


def byte_range_response(data: bytes, media_type: str, asked: str | None) -> Response:
    """``data`` whole (200), or the one byte range ``asked`` names (206; 416 when it starts past the end).

    Several ranges, or a header that is not one, get the whole object, as HTTP allows.
    """
    headers = {"Accept-Ranges": "bytes", "X-Content-Type-Options": "nosniff"}
    found = BYTE_RANGE.fullmatch((asked or "").strip())
    if found is None or found[1] == found[2] == "":
        return Response(data, media_type=media_type, headers=headers)
    size = len(data)
    if found[1] == "":  # "bytes=-500": the last 500 bytes
        first, last = max(0, size - int(found[2])), size - 1
    else:
        first, last = int(found[1]), min(int(found[2]) if found[2] else size - 1, size - 1)
    if first >= size or first > last:
        return Response(status_code=416, headers=headers | {"Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return Response(data[first : last + 1], status_code=206, media_type=media_type, headers=headers)


@router.delete("/{video_id}", status_code=204, responses={**ERRORS, **NOT_FOUND}, summary="Delete a video")
def delete_video(runtime: RuntimeDep, video_id: str) -> Response:
    if not runtime.videos().delete(_video_id(video_id)):
        raise HTTPException(404, f"No video with id {video_id[:40]}.")
    return Response(status_code=204)


def job_view(request: Request, runtime: Any, job: VideoJob) -> dict[str, Any]:
    """A job as JSON: state, stage, progress, frames done, and the stored video's document when done."""
    base = public_base_url(runtime.settings, request)
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "state": job.state,
        "stage": job.stage,
        "progress": job.progress,
        "filename": job.filename,
        "frames_done": len(job.partial),
        "error": job.error,
        "video_id": job.video_id,
        "links": {"self": f"{base}/v1/videos/{job.job_id}"},
    }
    if job.state == "done" and job.video_id is not None:
        stored = runtime.videos().get(job.video_id)
        if stored is not None:
            view["result"] = _document(request, runtime, stored)
    return view


def _document(request: Request, runtime: Any, stored: StoredVideo) -> dict[str, Any]:
    base = f"{public_base_url(runtime.settings, request)}/v1/videos/{stored.video_id}"
    links = {
        kind: signed_link(runtime.settings, f"{base}/{kind}", stored.video_id, _signed_kind(kind))
        for kind in OBJECT_KINDS
        if kind != "annotated" or stored.keys.annotated
    }
    return runtime.videos().document(stored, {"self": base} | links)


def _signed_kind(kind: str) -> str:
    """What a clip's object link signs besides the id: never what a photo's link of the same md5 would sign."""
    return f"video/{kind}"


def _video_id(text: str) -> str:
    video_id = text.strip().lower()
    if len(video_id) != 32 or any(c not in "0123456789abcdef" for c in video_id):
        raise HTTPException(404, f"No video with id {text[:40]}.")
    return video_id


def _spooled_to_disk(file: UploadFile, max_bytes: int) -> Path:
    """The upload copied to a file of its own (the job reads it and removes it), refused over ``max_bytes``."""
    with tempfile.NamedTemporaryFile(prefix="picmetric-upload-", suffix=".video", delete=False) as target:
        path = Path(target.name)
        try:
            copied = 0
            while chunk := file.file.read(_COPY_CHUNK):
                copied += len(chunk)
                if copied > max_bytes:
                    raise VideoTooLarge(f"The video is too large: the limit is {format_size(max_bytes)}.")
                target.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return path
