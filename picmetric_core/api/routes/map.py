"""``GET /v1/map``: every stored photo placed by its embedding, filtered as the History is."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.exceptions import HTTPException

from picmetric_core.api.deps import RuntimeDep, ThresholdsDep
from picmetric_core.api.schemas import READ_ERRORS, MapBody
from picmetric_core.history import MAX_PAGE_SIZE, HistoryFilters

router = APIRouter(prefix="/v1/map", tags=["map"])


@router.get("", response_model=MapBody, responses=READ_ERRORS, summary="The History map: a point per stored photo")
def history_map(
    runtime: RuntimeDep, shown: ThresholdsDep, filters: Annotated[HistoryFilters, Query()]
) -> dict[str, Any]:
    """Points (md5, x, y, cluster, uniqueness) of the photos the History filters find, and the clusters'
    names. Photos stored since the last fit are placed by their nearest neighbours as they are read."""
    try:
        query = filters.query(min_face_score=shown.min_face_score, limit=MAX_PAGE_SIZE)
    except ValueError as error:
        raise HTTPException(422, str(error)) from None
    view = runtime.service().map_view(query)
    fit = view.fit
    return {
        "classifier": view.classifier,
        "method": fit.method if fit else None,
        "fitted_at": fit.finished_at if fit else None,
        "points": [
            {"md5": p.md5, "x": p.x, "y": p.y, "cluster": p.cluster, "uniqueness": p.uniqueness}
            for p in view.points
            if p.md5 in view.matching
        ],
        "clusters": [{"cluster": c.cluster, "label": c.label, "count": c.count} for c in fit.clusters] if fit else [],
        "unplaced": view.unplaced,
        "without_embedding": view.without_embedding,
    }
