"""The application factory: settings, lifetime, middleware, error handlers and the routers.

One :class:`~picmetric_core.service.PicMetricService` serves every request; the networks load in a
background thread at startup, so ``/healthz`` answers at once and says when they are ready. Every
endpoint that decodes, runs a network or touches the store or database is a plain ``def``, which
FastAPI runs in its thread pool, never on the event loop. The analyzer is thread-safe (each network
serialises its own inference), so concurrent requests share it.

Example:
    >>> from picmetric_core.config import Settings
    >>> app = create_app(Settings(_env_file=None, data_dir="/tmp/picmetric"))
    >>> sorted(path for path in app.openapi()["paths"] if path.startswith("/v1/analyses/{md5}"))
    ['/v1/analyses/{md5}', '/v1/analyses/{md5}/similar', '/v1/analyses/{md5}/{kind}']
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
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from picmetric_core.api.access import document_token, open_matcher
from picmetric_core.api.middleware import BodyLimit, DatabaseBudget, TokenGate
from picmetric_core.api.routes import analyses, batches, exports, health, legacy, links, objects, similar, videos
from picmetric_core.api.routes import map as history_map
from picmetric_core.config import Settings, get_settings
from picmetric_core.errors import DatabaseUnavailable, PicMetricError, client_message
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.runtime import Runtime
from picmetric_core.store.database import request_budget_s

log = logging.getLogger(__name__)

GENERIC_500 = "Something went wrong on the server; it has been logged. Try again, or report it if it persists."


def create_app(settings: Settings | None = None, *, loader: ModelLoader | None = None) -> FastAPI:
    """The ASGI app: ``uvicorn picmetric_core.api:create_app --factory``.

    Args:
        settings: Configuration; :func:`get_settings` (environment and ``.env``) by default.
        loader: The networks; a :class:`ModelLoader` for ``settings`` by default.
    """
    settings = settings or get_settings()
    runtime = Runtime(settings, loader)  # its own, not the shared one: each app may bring its own loader

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=runtime.warm_up, name="picmetric-warm-up", daemon=True).start()
        yield
        runtime.close()

    app = FastAPI(
        title="PicMetric API",
        version=health.API_VERSION,
        summary="ImageNet classes, COCO objects and faces in a photo, stored and searchable.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.add_middleware(DatabaseBudget, seconds=request_budget_s(settings))
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_image_bytes, larger={videos.router.prefix: settings.video_max_bytes}
    )
    app.add_middleware(TokenGate, token=settings.api_token, is_open=open_matcher(app))  # no body read without it
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            # Any request header: the old front end's axios sends its own (`timeout`), which forces a preflight.
            allow_headers=["*"],
            expose_headers=["X-PicMetric-Seen-Before"],
        )
    _add_error_handlers(app)
    for routes in (analyses, exports, similar, history_map, links, objects, health, batches, legacy, videos):
        app.include_router(routes.router)
    if settings.api_token is not None:
        document_token(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PicMetricError)
    async def picmetric_error(request: Request, error: PicMetricError) -> JSONResponse:
        if error.status >= 500:
            log.warning("%s on %s %s: %s", type(error).__name__, request.method, request.url.path, error)
        headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
        return JSONResponse({"error": client_message(error)}, status_code=error.status, headers=headers)

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

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def database_down(request: Request, error: Exception) -> JSONResponse:
        # A database failure that no database_errors() block translated: still the database, still a 503.
        log.warning("database failure on %s %s: %s", request.method, request.url.path, error)
        down = DatabaseUnavailable()
        return JSONResponse(
            {"error": client_message(down)}, status_code=down.status, headers={"Retry-After": str(down.retry_after_s)}
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse({"error": GENERIC_500}, status_code=500)
