"""The bodies the API documents in ``/openapi.json``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from picmetric_core.history import HistoryFilters

IsoDatetime = Annotated[datetime, PlainSerializer(datetime.isoformat, return_type=str)]
"""A moment as ``datetime.isoformat`` writes it (``+00:00``), the same in every document PicMetric hands out."""


class ErrorBody(BaseModel):
    """Every error: a message fit for a person."""

    error: str


class LegacyResponse(BaseModel):
    """The old Flask API's response, field for field (``resnet`` and ``yolov3`` are JSON strings;
    ``yolov3`` is ``null`` when no object reaches 50 %)."""

    error: str
    hash: str
    original: str
    resnet: str
    yolov3: str | None
    yolov3_source: str
    faces_source: str


# The v1 bodies, field for field as picmetric_core.views builds them (results.py's dataclasses).


class V1Body(BaseModel):
    """A v1 body documents every field it has: nothing undocumented is sent."""

    model_config = ConfigDict(extra="forbid")


class BoxBody(V1Body):
    """Corners in the image's pixels, origin top-left."""

    x1: float
    y1: float
    x2: float
    y2: float


class PointBody(V1Body):
    x: float
    y: float


class ClassificationBody(V1Body):
    """One ImageNet class; ``score`` is a softmax probability."""

    label: str
    class_id: int
    score: float


class DetectionBody(V1Body):
    """One COCO object."""

    label: str
    class_id: int
    score: float
    box: BoxBody


class FaceBody(V1Body):
    """One face with its five landmarks (left_eye, right_eye, nose, mouth_left, mouth_right)."""

    score: float
    box: BoxBody
    landmarks: dict[str, PointBody]


class ModelInfoBody(V1Body):
    """Which network and weights ran for one role; ``full`` is false for an offline stand-in."""

    role: str
    name: str
    weights: str
    full: bool
    input_size: int | None = None
    note: str = ""
    runtime: str = Field("", description="How it ran: runtime, precision and the CPU's matrix unit")


class ThresholdsBody(V1Body):
    min_detection_score: float
    nms_iou: float
    min_face_score: float


class ShownBody(V1Body):
    """What a viewer sees at ``thresholds`` (the query's, else the defaults)."""

    thresholds: ThresholdsBody
    detections: list[DetectionBody]
    faces: list[FaceBody]


class ObjectLinksBody(V1Body):
    """Links to the stored original, both overlays and the thumbnail."""

    original: str
    detections: str
    faces: str
    thumbnail: str


class ObjectKeysBody(V1Body):
    """The objects' keys in the store."""

    original: str
    detections: str
    faces: str
    thumbnail: str


class RecordBody(V1Body):
    """Where the image came from and where its objects are."""

    md5: str
    created_at: IsoDatetime
    filename: str | None
    source: Literal["upload", "url", "live"]
    source_url: str | None
    content_type: str
    byte_size: int
    width: int
    height: int
    keys: ObjectKeysBody


class NearDuplicateBody(V1Body):
    """A stored photo that is the same picture as this one (resized, re-encoded, lightly cropped)."""

    md5: str
    distance: int = Field(description="How many of the 64 bits of the two perceptual hashes differ")


class AnalysisBody(V1Body):
    """A stored analysis: raw results (kept at low thresholds), what is shown, models, timings, links."""

    md5: str
    width: int
    height: int
    classifications: list[ClassificationBody]
    detections: list[DetectionBody]
    faces: list[FaceBody]
    models: list[ModelInfoBody]
    timings_ms: dict[str, float]
    shown: ShownBody
    urls: ObjectLinksBody
    record: RecordBody
    seen_before: bool = Field(description="True when no network ran for this request")
    near_duplicates: list[NearDuplicateBody] = Field(description="Stored photos that are the same picture")
    uniqueness: float | None = Field(
        None, description="1 − mean cosine similarity to its 5 nearest stored photos (History map); null: not mapped"
    )


class AnalysisPageBody(V1Body):
    """One page of past analyses, newest first."""

    items: list[AnalysisBody]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")
    page: int
    limit: int
    total: int | None = Field(description="How many match in all, with `with_total=true`")


class DeleteRequest(HistoryFilters):
    """Which analyses ``POST /v1/analyses/delete`` deletes: the History filters (at least one), or ``all``.

    A field this body does not know is refused (a misspelt filter must not widen a delete).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    all: bool = Field(False, description="Without any filter: delete every analysis (required then)")
    dry_run: bool = Field(False, description="Delete nothing: only say which analyses would be deleted")

    @property
    def filtered(self) -> bool:
        """Whether any History filter is set."""
        return any(getattr(self, name) is not None for name in HistoryFilters.model_fields)


class DeletedBody(V1Body):
    """What a delete did."""

    deleted: int = Field(description="How many analyses were deleted (with dry_run: would be)")
    md5s: list[str] = Field(description="Their md5s, oldest first")
    dry_run: bool
    pending_objects: int = Field(
        description="Objects still in the store because it failed (of this or an earlier delete); the next delete "
        "removes them. Nothing shows them meanwhile."
    )
    video_ids: list[str] = Field(
        default_factory=list,
        description="The video clips the filters selected, deleted with them (with dry_run: would be), oldest "
        "first; a filter clips do not have (faces, a classifier label, batch, similar, uniqueness) selects none",
    )
class SimilarItemBody(V1Body):
    """A stored photo like the one asked about."""

    md5: str
    similarity: float = Field(description="Cosine similarity of the classifier's embeddings (1: the same content)")
    filename: str | None
    created_at: IsoDatetime
    top_class: str | None
    urls: ObjectLinksBody


class SimilarBody(V1Body):
    """The stored photos most like one in content, most similar first, and its near-duplicates."""

    md5: str
    items: list[SimilarItemBody]
    near_duplicates: list[NearDuplicateBody]


class BatchFailureBody(V1Body):
    """An item of a batch job that could not be analysed, by its file name."""

    item: str
    error: str | None


class BatchJobBody(V1Body):
    """A batch job: its sources, status and counts (items by file name only)."""

    id: int
    sources: list[str]
    status: str
    total: int
    done: int
    new: int
    seen: int
    failed: int
    near_duplicates: int
    started_at: IsoDatetime
    finished_at: IsoDatetime | None
    images_per_s: float | None
    error: str | None
    history: str = Field(description="The history filtered to this job's images")
    resumed: bool | None = Field(None, description="On a start: true when it continues an unfinished job")
    failures: list[BatchFailureBody] | None = Field(None, description="On one job's status: its failed items")


class BatchPageBody(V1Body):
    """Batch jobs, newest first."""

    items: list[BatchJobBody]


class NetworksBody(V1Body):
    """Whether the networks are loaded."""

    state: Literal["loading", "ready", "failed"]
    error: str | None = None
    models: list[ModelInfoBody] | None = None
    load_seconds: dict[str, float] | None = None


class HealthBody(V1Body):
    status: Literal["ok"]
    version: str
    networks: NetworksBody


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


class MapPointBody(V1Body):
    """A stored photo on the History map."""

    md5: str
    x: float
    y: float
    cluster: int = Field(description="Its cluster on the map; -1 in none")
    uniqueness: float = Field(description="1 − mean cosine similarity to its 5 nearest photos (0: copies around it)")


class MapClusterBody(V1Body):
    """A cluster of the map, named by the top class most of its photos share."""

    cluster: int
    label: str
    count: int


class MapBody(V1Body):
    """Every stored photo that has an embedding, placed by it; the filters keep only the points they match."""

    classifier: str | None = Field(description="The classifier whose embeddings place the photos")
    method: str | None = Field(description="umap, or pca for few photos; null before the first fit")
    fitted_at: IsoDatetime | None
    points: list[MapPointBody]
    clusters: list[MapClusterBody]
    unplaced: int = Field(description="Photos with an embedding still waiting for a place (the next read places them)")
    without_embedding: int = Field(
        description="Stored photos without an embedding, so not on the map (`picmetric similar backfill` adds them)"
    )
