"""The JSON API: the old Flask endpoints for old clients, and a versioned API with the full results.

Serve it with ``uvicorn picmetric_core.api:create_app --factory`` (see the README). One
:class:`~picmetric_core.service.PicMetricService` serves every request; the networks load in a
background thread at startup, so ``/healthz`` answers at once and says when they are ready. Every
endpoint that decodes, runs a network or touches the store or database is a plain ``def``, which
FastAPI runs in its thread pool, never on the event loop. The analyzer is thread-safe (each network
serialises its own inference), so concurrent requests share it.

Example:
    >>> app = create_app(Settings(data_dir="/tmp/picmetric"))
    >>> sorted(route.path for route in app.routes if route.path.startswith("/v1"))
    ['/v1/analyses', '/v1/analyses', '/v1/analyses/{md5}']
"""

import hmac
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, File, Form, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from picmetric_core.config import Settings, get_settings
from picmetric_core.errors import ImageTooLarge, PicMetricError
from picmetric_core.filters import DEFAULT_THRESHOLDS, DisplayThresholds
from picmetric_core.history import MAX_PAGE_SIZE, HistoryQuery
from picmetric_core.images import DecodedImage, decode_for, format_size
from picmetric_core.pipeline import StageCallback
from picmetric_core.results import Analysis
from picmetric_core.service import PicMetricService, Submission
from picmetric_core.storage import ObjectNotFound, content_type_of
from picmetric_core.views import full_view, legacy_view

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
# A request for an analysis waits this long for the networks to finish loading before a 503.
MODELS_WAIT_S = 300.0
# Multipart framing around the image: a body longer than the image limit plus this is refused unread.
MULTIPART_SLACK_BYTES = 64 * 1024
OBJECT_KEY = re.compile(
    r"[0-9a-f]{32}/(?:original\.(?:jpg|png|webp|gif|bmp|tiff|bin)|detections\.png|faces\.png|thumb\.jpg)"
)
MD5 = r"^[0-9a-fA-F]{32}$"
GENERIC_500 = "Something went wrong on the server; it has been logged. Try again, or report it if it persists."


class ModelsNotReady(PicMetricError):
    """The networks are still loading, or failed to load."""

    status = 503


class ErrorBody(BaseModel):
    """Every error: a message fit for a person."""

    error: str


class LegacyResponse(BaseModel):
    """The old Flask API's response, field for field (``resnet`` and ``yolov3`` are JSON strings)."""

    error: str
    hash: str
    original: str
    resnet: str
    yolov3: str
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


class ModelLoader:
    """Loads the networks once, in a background thread, and hands analyses to them when ready.

    It is the service's analyzer: lookups and history work while it loads, and an analysis waits
    (up to ``wait_s``) for the networks instead of failing.
    """

    def __init__(
        self, settings: Settings, load: Callable[[Settings], Any] | None = None, wait_s: float = MODELS_WAIT_S
    ):
        self.settings = settings
        self._load = load
        self._wait_s = wait_s
        self._done = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._analyzer: Any = None
        self._error: str | None = None

    def start(self) -> None:
        """Start loading (once; later calls do nothing)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="picmetric-model-load", daemon=True)
                self._thread.start()

    @property
    def state(self) -> Literal["loading", "ready", "failed"]:
        if not self._done.is_set():
            return "loading"
        return "failed" if self._error is not None else "ready"

    def describe(self) -> dict[str, Any]:
        """What ``/healthz`` reports about the networks."""
        report: dict[str, Any] = {"state": self.state}
        if self._error is not None:
            report["error"] = self._error
        if self._analyzer is not None:
            report["models"] = [asdict(info) for info in self._analyzer.models]
            report["load_seconds"] = dict(self._analyzer.load_seconds)
        return report

    def analyze(self, image: DecodedImage, on_stage: StageCallback | None = None) -> Analysis:
        self.start()
        if not self._done.wait(self._wait_s):
            raise ModelsNotReady("The networks are still loading; try again in a minute.")
        if self._error is not None:
            raise ModelsNotReady(f"The networks could not be loaded: {self._error}")
        return self._analyzer.analyze(image, on_stage=on_stage)

    def _run(self) -> None:
        try:
            load = self._load
            if load is None:
                from picmetric_core.pipeline import get_analyzer

                load = get_analyzer
            self._analyzer = load(self.settings)
            log.info("networks ready: %s", ", ".join(info.name for info in self._analyzer.models))
        except Exception as error:
            log.exception("loading the networks failed")
            self._error = str(error) or type(error).__name__
        finally:
            self._done.set()


class Runtime:
    """What the app holds for its lifetime: the settings, the model loader and one service."""

    def __init__(self, settings: Settings, loader: ModelLoader) -> None:
        self.settings = settings
        self.loader = loader
        self._service: PicMetricService | None = None
        self._service_lock = threading.Lock()

    def service(self) -> PicMetricService:
        """The service, created on first use (again after a failure, e.g. a database that was down)."""
        with self._service_lock:
            if self._service is None:
                self._service = PicMetricService(self.settings, self.loader)
            return self._service

    def warm_up(self) -> None:
        """Open the database and store (logging a failure: requests retry it) and start loading the networks."""
        self.loader.start()
        try:
            self.service()
        except Exception:
            log.exception("the service could not start yet; requests will retry")

    def close(self) -> None:
        with self._service_lock:
            if self._service is not None:
                self._service.close()
                self._service = None


class BodyLimit:
    """Refuses a request body declared larger than the image limit before any of it is read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_bytes + MULTIPART_SLACK_BYTES:
                message = f"The image is too large: the limit is {format_size(self.max_bytes)}."
                await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None, *, loader: ModelLoader | None = None) -> FastAPI:
    """The ASGI app: ``uvicorn picmetric_core.api:create_app --factory``.

    Args:
        settings: Configuration; :func:`get_settings` (environment and ``.env``) by default.
        loader: The networks; a :class:`ModelLoader` for ``settings`` by default.
    """
    settings = settings or get_settings()
    runtime = Runtime(settings, loader or ModelLoader(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=runtime.warm_up, name="picmetric-warm-up", daemon=True).start()
        yield
        runtime.close()

    app = FastAPI(
        title="PicMetric API",
        version=API_VERSION,
        summary="ImageNet classes, COCO objects and faces in a photo, stored and searchable.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.add_middleware(BodyLimit, max_bytes=settings.max_image_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-PicMetric-Seen-Before"],
        )
    _add_error_handlers(app)

    bearer = HTTPBearer(auto_error=False, description="Required for writes when PICMETRIC_API_TOKEN is set.")

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.api_token is None:
            return
        expected = settings.api_token.get_secret_value().encode()
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401,
                "A valid bearer token is required: send Authorization: Bearer <token>.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # Declared only with a token, so the OpenAPI schema says whether writes need one.
    writes = [Depends(require_token)] if settings.api_token is not None else []

    def thresholds(
        min_detection_score: Annotated[float, Query(ge=0, le=1)] = DEFAULT_THRESHOLDS.min_detection_score,
        nms_iou: Annotated[float, Query(ge=0, le=1)] = DEFAULT_THRESHOLDS.nms_iou,
        min_face_score: Annotated[float, Query(ge=0, le=1)] = DEFAULT_THRESHOLDS.min_face_score,
    ) -> DisplayThresholds:
        return DisplayThresholds(min_detection_score, nms_iou, min_face_score)

    # --- the old API -------------------------------------------------------------------------------

    @app.post(
        "/do_data_science",
        tags=["legacy"],
        response_model=LegacyResponse,
        responses=ERRORS,
        dependencies=writes,
        summary="Analyse an uploaded image (the old API's shape)",
    )
    def do_data_science(request: Request, file: Annotated[UploadFile, File()]) -> Response:
        submission = _submit_upload(runtime, file)
        return _legacy(request, submission)

    @app.post(
        "/do_data_science_url",
        tags=["legacy"],
        response_model=LegacyResponse,
        responses=ERRORS,
        dependencies=writes,
        summary="Analyse the image at a URL (the old API's shape)",
    )
    def do_data_science_url(request: Request, url: Annotated[str, Form(description="The image's address")]) -> Response:
        return _legacy(request, _submit_url(runtime, url))

    @app.get(
        "/do_data_science_url",
        tags=["legacy"],
        response_model=LegacyResponse,
        responses=ERRORS,
        dependencies=writes,
        summary="Analyse the image at a URL, as the old API also answered GET (?url=)",
    )
    def do_data_science_url_get(
        request: Request, url: Annotated[str, Query(description="The image's address")]
    ) -> Response:
        return _legacy(request, _submit_url(runtime, url))

    @app.get("/upload", response_class=HTMLResponse, tags=["legacy"], summary="A test page with both forms")
    def upload_page() -> HTMLResponse:
        return HTMLResponse(UPLOAD_PAGE)

    # --- v1 ----------------------------------------------------------------------------------------

    @app.post(
        "/v1/analyses",
        tags=["v1"],
        status_code=201,
        responses={200: {"description": "The image was analysed before: its stored analysis"}, **ERRORS},
        dependencies=writes,
        summary="Analyse an uploaded image or the image at a URL",
    )
    def create_analysis(
        request: Request,
        shown: Annotated[DisplayThresholds, Depends(thresholds)],
        file: Annotated[UploadFile | None, File(description="The image (or give url)")] = None,
        url: Annotated[str | None, Form(description="The image's address (or give file)")] = None,
    ) -> Response:
        """The full results; ``seen_before`` is true (and the status 200) when no network ran for this call."""
        if (file is None) == (url is None):
            raise HTTPException(422, "Send exactly one of: a file (multipart field `file`) or a `url` form field.")
        submission = _submit_upload(runtime, file) if file is not None else _submit_url(runtime, url or "")
        return _json(_full(request, submission, shown), status=200 if submission.seen_before else 201)

    @app.get("/v1/analyses", tags=["v1"], responses=READ_ERRORS, summary="Past analyses, newest first")
    def list_analyses(
        request: Request,
        shown: Annotated[DisplayThresholds, Depends(thresholds)],
        label: Annotated[str | None, Query(max_length=200, description="An ImageNet or COCO label")] = None,
        label_kind: Literal["classifier", "detector"] | None = None,
        min_score: Annotated[
            float | None,
            Query(ge=0, le=1, description="Confidence from which a label counts (default 0.25 with a label, else 0)"),
        ] = None,
        has_faces: bool | None = None,
        min_faces: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        max_faces: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        min_face_score: Annotated[float, Query(ge=0, le=1)] = DEFAULT_THRESHOLDS.min_face_score,
        since: Annotated[datetime | None, Query(description="ISO 8601 with a timezone")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601 with a timezone")] = None,
        filename: Annotated[str | None, Query(max_length=255, description="Part of the file name")] = None,
        md5: Annotated[str | None, Query(pattern=r"^[0-9a-fA-F]{1,32}$", description="An md5 or its start")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 24,
        page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
        cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the page before")] = None,
        with_total: bool = False,
    ) -> Response:
        try:
            query = HistoryQuery(
                label=label,
                label_kind=label_kind,
                min_score=_label_score(min_score, label, label_kind),
                has_faces=has_faces,
                min_faces=min_faces,
                max_faces=max_faces,
                min_face_score=min_face_score,
                since=since,
                until=until,
                filename=filename,
                md5=md5.lower() if md5 else None,
                limit=limit,
                page=page,
                cursor=cursor,
                with_total=with_total,
            )
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        result = runtime.service().history(query)
        return _json(
            {
                "items": [_full(request, item, shown) for item in result.items],
                "next_cursor": result.next_cursor,
                "page": result.page,
                "limit": result.limit,
                "total": result.total,
            }
        )

    @app.get(
        "/v1/analyses/{md5}",
        tags=["v1"],
        responses={404: {"model": ErrorBody, "description": "Never analysed"}, **READ_ERRORS},
        summary="The stored analysis of one image",
    )
    def get_analysis(
        request: Request,
        md5: Annotated[str, Path(pattern=MD5)],
        shown: Annotated[DisplayThresholds, Depends(thresholds)],
    ) -> Response:
        submission = runtime.service().get(md5.lower())
        if submission is None:
            raise HTTPException(404, f"No analysis of an image with md5 {md5.lower()}.")
        return _json(_full(request, submission, shown))

    @app.get("/objects/{key:path}", tags=["v1"], responses={404: {"model": ErrorBody}, 503: ERRORS[503]})
    def get_object(key: str) -> Response:
        """A stored image or overlay (for a local store, whose objects have no links of their own)."""
        if not OBJECT_KEY.fullmatch(key):
            raise HTTPException(404, "No such object.")
        try:
            data = runtime.service().store.get(key)
        except ObjectNotFound:
            raise HTTPException(404, "No such object.") from None
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}
        return Response(data, media_type=content_type_of(key), headers=headers)

    @app.get("/healthz", tags=["v1"], summary="Liveness, and whether the networks are loaded")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": API_VERSION, "networks": runtime.loader.describe()}

    return app


def _label_score(min_score: float | None, label: str | None, label_kind: str | None) -> float:
    """The history's ``min_score``: as given, else the default for a label search and 0 (list everything) without."""
    if min_score is not None:
        return min_score
    return DEFAULT_THRESHOLDS.min_detection_score if label is not None or label_kind is not None else 0.0


def _read_upload(file: UploadFile, settings: Settings) -> bytes:
    data = file.file.read(settings.max_image_bytes + 1)
    if len(data) > settings.max_image_bytes:
        raise ImageTooLarge(f"The image is too large: the limit is {format_size(settings.max_image_bytes)}.")
    return data


def _submit_upload(runtime: Runtime, file: UploadFile) -> Submission:
    image = decode_for(runtime.settings, _read_upload(file, runtime.settings))
    return runtime.service().submit(image, source="upload", filename=file.filename or None)


def _submit_url(runtime: Runtime, url: str) -> Submission:
    from picmetric_core.fetch import fetch_url

    fetched = fetch_url(url, runtime.settings)
    image = decode_for(runtime.settings, fetched.data)
    name = PurePosixPath(urlsplit(fetched.final_url).path).name or None
    return runtime.service().submit(image, source="url", filename=name, source_url=fetched.url)


def _object_urls(request: Request, submission: Submission) -> dict[str, str]:
    """The store's links, or links to ``/objects/...`` on this server for a store without links."""
    urls = asdict(submission.urls)
    keys = asdict(submission.record.keys)
    return {name: link or str(request.url_for("get_object", key=keys[name])) for name, link in urls.items()}


def _legacy(request: Request, submission: Submission) -> Response:
    urls = _object_urls(request, submission)
    body = legacy_view(
        submission.analysis, original_url=urls["original"], detections_url=urls["detections"], faces_url=urls["faces"]
    )
    # The body keeps the old shape exactly; whether a network ran is told in a header.
    return _json(body, headers={"X-PicMetric-Seen-Before": str(submission.seen_before).lower()})


def _full(request: Request, submission: Submission, thresholds: DisplayThresholds) -> dict[str, Any]:
    record = asdict(submission.record)
    record["created_at"] = submission.record.created_at.isoformat()
    view = full_view(submission.analysis, thresholds=thresholds, urls=_object_urls(request, submission), record=record)
    return {**view, "seen_before": submission.seen_before}


def _json(content: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(content, default=_plain, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays (which networks hand back) as Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PicMetricError)
    async def picmetric_error(_request: Request, error: PicMetricError) -> JSONResponse:
        if error.status >= 500:
            log.warning("%s: %s", type(error).__name__, error)
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(item.get("loc", ())), "msg": str(item.get("msg", "")), "type": str(item.get("type", ""))}
            for item in error.errors()
        ]
        summary = "; ".join(f"{'.'.join(map(str, d['loc'][1:])) or d['loc'][0]}: {d['msg']}" for d in details)
        return JSONResponse({"error": f"Invalid request: {summary}.", "detail": details}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse({"error": GENERIC_500}, status_code=500)


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
