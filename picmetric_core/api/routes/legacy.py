"""The old Flask API's endpoints, in their old shape, and its upload test page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from picmetric_core.api.access import OPEN
from picmetric_core.api.deps import RuntimeDep
from picmetric_core.api.routes.links import stable_link
from picmetric_core.api.schemas import ERRORS, LegacyResponse
from picmetric_core.api.submit import submit_upload, submit_url
from picmetric_core.runtime import Runtime
from picmetric_core.submission import Submission
from picmetric_core.views import legacy_submission_document

router = APIRouter(tags=["legacy"])


@router.post(
    "/do_data_science",
    response_model=LegacyResponse,
    responses=ERRORS,
    summary="Analyse an uploaded image (the old API's shape)",
)
def do_data_science(
    request: Request, response: Response, runtime: RuntimeDep, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    return _legacy(request, response, runtime, submit_upload(runtime, file))


@router.post(
    "/do_data_science_url",
    response_model=LegacyResponse,
    responses=ERRORS,
    summary="Analyse the image at a URL (the old API's shape)",
)
def do_data_science_url(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    url: Annotated[str, Form(description="The image's address")],
) -> dict[str, Any]:
    return _legacy(request, response, runtime, submit_url(runtime, url))


@router.get(
    "/do_data_science_url",
    response_model=LegacyResponse,
    responses=ERRORS,
    summary="Analyse the image at a URL, as the old API also answered GET (?url=)",
)
def do_data_science_url_get(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    url: Annotated[str, Query(description="The image's address")],
) -> dict[str, Any]:
    return _legacy(request, response, runtime, submit_url(runtime, url))


@router.get("/upload", openapi_extra=OPEN, response_class=HTMLResponse, summary="A test page with both forms")
def upload_page() -> HTMLResponse:
    return HTMLResponse(UPLOAD_PAGE)


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    """The old API's front page sent visitors to its upload page."""
    return RedirectResponse("/upload", status_code=302)


def _legacy(request: Request, response: Response, runtime: Runtime, submission: Submission) -> dict[str, Any]:
    # The body keeps the old shape exactly; whether a network ran is told in a header.
    response.headers["X-PicMetric-Seen-Before"] = str(submission.seen_before).lower()
    return legacy_submission_document(submission, urls=_kept_links(request, runtime, submission))


def _kept_links(request: Request, runtime: Runtime, submission: Submission) -> dict[str, str]:
    """Links an old client may store forever: a public bucket's own URLs, else this API's link route.

    The link route draws an overlay on its first request; a public bucket's URL cannot, so on a
    public-read bucket the overlays are drawn and stored before their URLs are handed out.
    """
    settings = runtime.settings
    if settings.uses_s3 and settings.public_read and settings.s3_location:
        urls = runtime.service().with_overlays_stored(submission).urls
        return {"original": urls.original or "", "detections": urls.detections or "", "faces": urls.faces or ""}
    md5 = submission.analysis.md5
    return {kind: stable_link(settings, request, md5, kind) for kind in ("original", "detections", "faces")}


UPLOAD_PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>PicMetric API test page</title>
<style>body{font:16px system-ui,sans-serif;max-width:40rem;margin:2rem auto}form{margin:1.5rem 0}</style>
<h1>PicMetric API</h1>
<p>Both forms answer with the old API's JSON. The full results are at <a href="docs">/docs</a> (v1).
When the server has an API token these forms are refused: use a client that sends it.</p>
<h2>Upload an image</h2>
<form action="do_data_science" method="post" enctype="multipart/form-data">
  <input type="file" name="file" accept="image/*" required> <button>Analyse</button>
</form>
<h2>Analyse an image at a URL</h2>
<form action="do_data_science_url" method="post">
  <input type="url" name="url" size="50" placeholder="https://example.com/photo.jpg" required>
  <button>Analyse</button>
</form>
</html>
"""
