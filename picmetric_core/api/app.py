"""The application factory: settings, lifetime, middleware, error handlers and the routers.

One :class:`~picmetric_core.service.PicMetricService` serves every request; the networks load in a
background thread at startup, so ``/healthz`` answers at once and says when they are ready. Every
endpoint that decodes, runs a network or touches the store or database is a plain ``def``, which
FastAPI runs in its thread pool, never on the event loop. The analyzer is thread-safe (each network
serialises its own inference), so concurrent requests share it.

Example:
    >>> from picmetric_core.config import Settings
    >>> app = create_app(Settings(_env_file=None, data_dir="/tmp/picmetric"))
    >>> sorted(path for path in app.openapi()["paths"] if path.startswith("/v1"))
    ['/v1/analyses', '/v1/analyses/{md5}']
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from picmetric_core.api.deps import Runtime, token_dependencies
from picmetric_core.api.routes import analyses, legacy
from picmetric_core.config import Settings, get_settings
from picmetric_core.errors import PicMetricError
from picmetric_core.intake.images import format_size
from picmetric_core.lifecycle import ModelLoader

log = logging.getLogger(__name__)

# Multipart framing around the image: a body longer than the image limit plus this is refused unread.
MULTIPART_SLACK_BYTES = 64 * 1024
GENERIC_500 = "Something went wrong on the server; it has been logged. Try again, or report it if it persists."


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
        version=analyses.API_VERSION,
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
    writes = token_dependencies(settings)
    app.include_router(legacy.writes, dependencies=writes)
    app.include_router(legacy.pages)
    app.include_router(analyses.writes, dependencies=writes)
    app.include_router(analyses.reads)
    return app


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
