"""What routes need, read from the app's state: the runtime, the thresholds asked for, the token check."""

from __future__ import annotations

import hmac
import logging
import threading
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from picmetric_core.config import Settings
from picmetric_core.filters import DEFAULT_THRESHOLDS, DisplayThresholds
from picmetric_core.lifecycle import ModelLoader
from picmetric_core.service import PicMetricService, Submission
from picmetric_core.views import to_json

log = logging.getLogger(__name__)


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


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

bearer = HTTPBearer(auto_error=False, description="Required for writes when PICMETRIC_API_TOKEN is set.")


def require_token(
    runtime: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """A 401 unless the request carries the configured bearer token (no check when none is configured)."""
    token = runtime.settings.api_token
    if token is None:
        return
    given = credentials.credentials.encode() if credentials is not None else b""
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        raise HTTPException(
            401,
            "A valid bearer token is required: send Authorization: Bearer <token>.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def token_dependencies(settings: Settings) -> list[Any]:
    """Declared only with a token, so the OpenAPI schema says whether writes need one."""
    return [Depends(require_token)] if settings.api_token is not None else []


def thresholds(
    min_detection_score: Annotated[float, Query(ge=0, le=1)] = DEFAULT_THRESHOLDS.min_detection_score,
    nms_iou: Annotated[float, Query(ge=0, le=1)] = DEFAULT_THRESHOLDS.nms_iou,
    min_face_score: Annotated[float, Query(ge=0, le=1)] = DEFAULT_THRESHOLDS.min_face_score,
) -> DisplayThresholds:
    return DisplayThresholds(min_detection_score, nms_iou, min_face_score)


ThresholdsDep = Annotated[DisplayThresholds, Depends(thresholds)]


def object_urls(request: Request, submission: Submission) -> dict[str, str]:
    """The store's links, or links to ``/objects/...`` on this server for a store without links."""
    urls = asdict(submission.urls)
    keys = asdict(submission.record.keys)
    return {name: link or str(request.url_for("get_object", key=keys[name])) for name, link in urls.items()}


def json_response(content: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(content).encode(), status_code=status, media_type="application/json", headers=headers)
