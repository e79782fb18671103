"""What the pipeline needs from each network. Implementations load once and are thread-safe."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from picmetric_core.results import RAW_FACE_SCORE, Classification, Detection, Face, ModelInfo


class Classifier(Protocol):
    info: ModelInfo

    def classify(self, rgb: np.ndarray, top_k: int = 5) -> list[Classification]:
        """Top-k ImageNet classes of an HxWx3 uint8 RGB image, best first."""
        ...

    def classify_batch(self, images: list[np.ndarray], top_k: int = 5) -> list[list[Classification]]: ...

    def classify_batch_with_features(
        self, images: list[np.ndarray], top_k: int = 5
    ) -> list[tuple[list[Classification], np.ndarray]]:
        """Each image's top-k classes and its pooled features (the embedding "more like this" compares)."""
        ...


class Detector(Protocol):
    info: ModelInfo

    def detect(
        self, rgb: np.ndarray, score_threshold: float = 0.1, iou_threshold: float = 0.9
    ) -> list[Detection]:
        """COCO objects in an HxWx3 uint8 RGB image, boxes in its pixel coordinates."""
        ...

    def detect_batch(
        self, images: list[np.ndarray], score_threshold: float = 0.1, iou_threshold: float = 0.9
    ) -> list[list[Detection]]: ...


class FaceDetector(Protocol):
    info: ModelInfo

    def detect_faces(self, rgb: np.ndarray, min_confidence: float = RAW_FACE_SCORE) -> list[Face]:
        """Every face in an HxWx3 uint8 RGB image with its five landmarks."""
        ...

    def detect_faces_batch(
        self, images: list[np.ndarray], min_confidence: float = RAW_FACE_SCORE
    ) -> list[list[Face]]:
        """:meth:`detect_faces` for several images, one list per image, in order."""
        ...
