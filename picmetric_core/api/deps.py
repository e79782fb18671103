"""What routes need, read from the app's state: the runtime (:mod:`picmetric_core.runtime`), the thresholds
asked for, the token check."""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from picmetric_core.config import Settings
from picmetric_core.filters import DEFAULT_THRESHOLDS, SLIDER_RANGES, DisplayThresholds
from picmetric_core.runtime import Runtime
from picmetric_core.views import to_json


def get_runtime(request: Request) -> Runtime:
    """The app's runtime (``create_app`` makes one per app)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

bearer = HTTPBearer(
    auto_error=False,
    description="Required by every endpoint but /healthz and the docs when PICMETRIC_API_TOKEN is set.",
)
TOKEN_REQUIRED = "A valid bearer token is required: send Authorization: Bearer <token>."
OPEN_PATHS = frozenset({"/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/upload"})
"""Answered without the token: liveness, the API's documentation and its test page (no data in any)."""
SELF_CHECKED_PATHS = re.compile(r"/v1/analyses/[0-9a-fA-F]{32}/(?:original|detections|faces|thumbnail)")
"""Stable object links check the token or their own signature (an ``<img src>`` cannot send a header)."""


def token_matches(expected: SecretStr, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``expected`` as its bearer token (compared in constant time).

    Example:
        >>> token_matches(SecretStr("s3cret"), "Bearer s3cret"), token_matches(SecretStr("s3cret"), None)
        (True, False)
    """
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode(), expected.get_secret_value().encode())


class TokenGate:
    """With a token configured, refuses every request without it (but :data:`OPEN_PATHS` and CORS preflights).

    It runs before routing, so no request body is read, parsed or spooled for a caller without the token.
    """

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is not None and scope["type"] == "http" and self._guarded(scope):
            authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not token_matches(self.token, authorization):
                response = JSONResponse(
                    {"error": TOKEN_REQUIRED}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _guarded(scope: Scope) -> bool:
        path = scope["path"]
        return scope["method"] != "OPTIONS" and path not in OPEN_PATHS and not SELF_CHECKED_PATHS.fullmatch(path)


def require_token(
    runtime: RuntimeDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """A 401 unless the request carries the configured bearer token (no check when none is configured)."""
    token = runtime.settings.api_token
    if token is None:
        return
    given = f"Bearer {credentials.credentials}" if credentials is not None else None
    if not token_matches(token, given):
        raise HTTPException(401, TOKEN_REQUIRED, headers={"WWW-Authenticate": "Bearer"})


def token_dependencies(settings: Settings) -> list[Any]:
    """Declared only with a token, so the OpenAPI schema says which endpoints need one."""
    return [Depends(require_token)] if settings.api_token is not None else []


def _in_slider(name: str) -> Any:
    """A threshold's query parameter, bounded by the app's slider for it (:data:`SLIDER_RANGES`)."""
    bounds = SLIDER_RANGES[name]
    return Query(ge=bounds.low, le=bounds.high, description=f"From {bounds.low} to {bounds.high}")


def thresholds(
    min_detection_score: Annotated[float, _in_slider("min_detection_score")] = DEFAULT_THRESHOLDS.min_detection_score,
    nms_iou: Annotated[float, _in_slider("nms_iou")] = DEFAULT_THRESHOLDS.nms_iou,
    min_face_score: Annotated[float, _in_slider("min_face_score")] = DEFAULT_THRESHOLDS.min_face_score,
) -> DisplayThresholds:
    """The display thresholds asked for, within the ranges the app's sliders offer."""
    return DisplayThresholds(min_detection_score, nms_iou, min_face_score)


ThresholdsDep = Annotated[DisplayThresholds, Depends(thresholds)]


def json_response(content: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(to_json(content).encode(), status_code=status, media_type="application/json", headers=headers)
