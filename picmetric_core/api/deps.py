"""What routes need, read from the app's state: the runtime (:mod:`picmetric_core.runtime`), the thresholds
asked for, the token check."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from pydantic import SecretStr

from picmetric_core.filters import DEFAULT_THRESHOLDS, SLIDER_RANGES, DisplayThresholds
from picmetric_core.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The app's runtime (``create_app`` makes one per app)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

TOKEN_REQUIRED = "A valid bearer token is required: send Authorization: Bearer <token>."


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
