"""Typed results that every model, overlay, store, page and API speaks.

Coordinates are pixels in the original (EXIF-oriented) image, origin top-left.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, replace
from typing import Any

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# What the networks keep: the raw results' cut-offs, low so a viewer can re-filter below the display
# defaults (``picmetric_core.filters``) without running a network again. Nothing under them is ever stored.
RAW_DETECTION_SCORE = 0.1  # YOLO (box, class) pairs at or above this score
RAW_NMS_IOU = 0.9  # YOLO's class-wise NMS overlap
RAW_FACE_SCORE = 0.6  # MTCNN's O-Net probability (the mtcnn package's own default is 0.8)


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(f"box corners out of order: {self}")

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return self.width * self.height

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Classification:
    """One ImageNet class from the classifier, ``score`` a softmax probability."""

    label: str
    class_id: int
    score: float


@dataclass(frozen=True)
class Detection:
    """One COCO object from the detector: every instance keeps its own box."""

    label: str
    class_id: int
    score: float
    box: Box


@dataclass(frozen=True)
class Face:
    """One face with its box and the five landmarks named in ``LANDMARK_NAMES``."""

    score: float
    box: Box
    landmarks: dict[str, Point]

    def __post_init__(self) -> None:
        missing = set(LANDMARK_NAMES) - set(self.landmarks)
        if missing:
            raise ValueError(f"face is missing landmarks: {sorted(missing)}")


@dataclass(frozen=True)
class ModelInfo:
    """Which network and which weights actually ran for one role."""

    role: str  # "classifier" | "detector" | "faces"
    name: str  # e.g. "ResNet50", "EfficientNet-Lite2", "YOLOv3-tiny", "MTCNN"
    weights: str  # file name and checksum (``weights_label``), or the package's name; never a path
    full: bool  # True for the intended full model, False for the offline stand-in
    input_size: int | None = None
    note: str = ""
    # How it ran: runtime, precision and the CPU's matrix unit, e.g. "OpenVINO 2026.4.1 bfloat16 · AMX".
    runtime: str = ""

    def __post_init__(self) -> None:
        # Analyses stored before weights were labelled hold a filesystem path: keep only its last part.
        if "/" in self.weights:
            object.__setattr__(self, "weights", self.weights.rstrip("/").rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Signature:
    """What finds an image's near-duplicates and look-alikes (see :mod:`picmetric_core.similar`).

    Attributes:
        phash: The 64-bit perceptual hash, as a signed int64.
        embedding: The classifier's pooled features, L2-normalised, as little-endian float16 bytes;
            ``None`` when the classifier gave none.
        embedding_model: The classifier that made ``embedding`` (embeddings of two networks do not compare).
    """

    phash: int
    embedding: bytes | None = None
    embedding_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: the embedding as base64 (for carrying it between processes, e.g. batch stages)."""
        embedding = base64.b64encode(self.embedding).decode("ascii") if self.embedding is not None else None
        return {"phash": self.phash, "embedding": embedding, "embedding_model": self.embedding_model}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        embedding = base64.b64decode(data["embedding"]) if data.get("embedding") is not None else None
        return cls(int(data["phash"]), embedding, data.get("embedding_model"))


@dataclass(frozen=True)
class Analysis:
    """Everything the three networks found in one image.

    Raw results are kept at low thresholds (see ``picmetric_core.filters``) so a
    viewer can re-filter by confidence without running a network again.
    """

    md5: str
    width: int
    height: int
    classifications: tuple[Classification, ...]
    detections: tuple[Detection, ...]
    faces: tuple[Face, ...]
    models: tuple[ModelInfo, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Kept out of to_dict (views, stored JSON): the database holds it, next to the analysis.
    signature: Signature | None = field(default=None, compare=False, repr=False)

    def model(self, role: str) -> ModelInfo | None:
        return next((m for m in self.models if m.role == role), None)

    def with_boxes_scaled(self, factor: float, width: int, height: int) -> Analysis:
        """These results with every box and landmark times ``factor``, for an image of ``width`` × ``height``.

        Networks see a downscaled copy of a large image; this puts what they found back into the
        original's pixels (``factor`` > 1), or the original's results onto the copy (``factor`` < 1).
        """

        def box(b: Box) -> Box:
            return Box(b.x1 * factor, b.y1 * factor, b.x2 * factor, b.y2 * factor)

        return replace(
            self,
            width=width,
            height=height,
            detections=tuple(replace(d, box=box(d.box)) for d in self.detections),
            faces=tuple(
                replace(
                    f,
                    box=box(f.box),
                    landmarks={k: Point(p.x * factor, p.y * factor) for k, p in f.landmarks.items()},
                )
                for f in self.faces
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, without the signature: what views show."""
        data = asdict(self)
        del data["signature"]
        return data

    def to_record(self) -> dict[str, Any]:
        """:meth:`to_dict` with the signature: what the store keeps and batch stages carry, so an analysis
        read back (:meth:`from_dict`) still finds its near-duplicates and look-alikes."""
        signature = self.signature.to_dict() if self.signature is not None else None
        return {**self.to_dict(), "signature": signature}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Analysis:
        return cls(
            md5=data["md5"],
            width=int(data["width"]),
            height=int(data["height"]),
            classifications=tuple(Classification(**c) for c in data["classifications"]),
            detections=tuple(
                Detection(d["label"], d["class_id"], d["score"], Box(**d["box"]))
                for d in data["detections"]
            ),
            faces=tuple(
                Face(
                    f["score"],
                    Box(**f["box"]),
                    {k: Point(**p) for k, p in f["landmarks"].items()},
                )
                for f in data["faces"]
            ),
            models=tuple(ModelInfo(**m) for m in data["models"]),
            timings_ms=dict(data.get("timings_ms", {})),
            signature=Signature.from_dict(data["signature"]) if data.get("signature") is not None else None,
        )
