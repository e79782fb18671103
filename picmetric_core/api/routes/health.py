"""``GET /healthz``: liveness, and whether the networks are loaded (open without the token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from picmetric_core.api.access import OPEN
from picmetric_core.api.deps import RuntimeDep
from picmetric_core.api.schemas import HealthBody

API_VERSION = "1.0.0"

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    openapi_extra=OPEN,
    response_model=HealthBody,
    response_model_exclude_none=True,  # ``error`` only after a failure, ``models`` only once loaded
    summary="Liveness, and whether the networks are loaded",
)
def healthz(runtime: RuntimeDep) -> dict[str, Any]:
    return {"status": "ok", "version": API_VERSION, "networks": runtime.loader.describe()}
