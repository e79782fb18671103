"""A stored analysis as every door hands it out: where it came from, what was found, its links.

Types only, so that the service that makes them and the views that show them both import them here.
"""

from __future__ import annotations

from dataclasses import dataclass

from picmetric_core.results import Analysis
from picmetric_core.similar.index import NearDuplicate
from picmetric_core.store.history import AnalysisRecord


@dataclass(frozen=True)
class ObjectUrls:
    """Links to an image's objects: presigned (expiring) or public S3 URLs, ``None`` for a local store."""

    original: str | None
    detections: str | None
    faces: str | None
    thumbnail: str | None


@dataclass(frozen=True)
class Submission:
    """A stored analysis with links to its objects.

    Attributes:
        record: Where the image came from and where its objects are.
        analysis: What the networks found.
        seen_before: ``True`` when the image was already stored and no network ran for this call.
        urls: Links to the original, both overlays and the thumbnail.
        near_duplicates: Stored photos that are the same picture (resized, re-encoded, a little cropped
            or recoloured), closest first; found when an image is analysed.
    """

    record: AnalysisRecord
    analysis: Analysis
    seen_before: bool
    urls: ObjectUrls
    near_duplicates: tuple[NearDuplicate, ...] = ()


@dataclass(frozen=True)
class SimilarPhoto:
    """A stored photo like the one asked about; ``similarity`` is a cosine similarity (1: the same content)."""

    submission: Submission
    similarity: float
