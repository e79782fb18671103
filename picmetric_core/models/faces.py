"""Faces with the ``mtcnn`` package: every face with its box, confidence and five landmarks."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from picmetric_core.models import weights
from picmetric_core.models.base import FaceDetector
from picmetric_core.results import LANDMARK_NAMES, RAW_FACE_SCORE, Box, Face, ModelInfo, Point

# The package's O-Net threshold is 0.8; we keep candidates down to the raw cut-off.


class MtcnnFaceDetector:
    """MTCNN (P-Net, R-Net, O-Net) on the package's shipped weights. Thread-safe."""

    def __init__(self) -> None:
        from mtcnn import MTCNN  # imports TensorFlow: keep it off module import

        self._mtcnn = MTCNN()
        self._lock = threading.Lock()
        shipped = weights.locate(weights.MTCNN_WEIGHTS, Path())
        self.info = ModelInfo(
            role="faces",
            name="MTCNN",
            weights=weights.weights_label(shipped.parent) if shipped else "mtcnn package",
            full=True,
        )

    def detect_faces(self, rgb: np.ndarray, min_confidence: float = RAW_FACE_SCORE) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, most confident first.

        Example:
            >>> faces = MtcnnFaceDetector().detect_faces(skimage.data.astronaut())
            >>> len(faces), faces[0].landmarks["nose"]
            (1, Point(x=224.0, y=126.0))
        """
        if min(rgb.shape[:2]) < 12:  # smaller than P-Net's window: nothing to find
            return []
        with self._lock:
            raw = self._mtcnn.detect_faces(
                np.ascontiguousarray(rgb),
                threshold_onet=min(min_confidence, RAW_FACE_SCORE),
            )
        faces = [_to_face(item) for item in raw if float(item["confidence"]) >= min_confidence]
        return sorted(faces, key=lambda f: f.score, reverse=True)

    def detect_faces_batch(
        self, images: list[np.ndarray], min_confidence: float = RAW_FACE_SCORE
    ) -> list[list[Face]]:
        """:meth:`detect_faces` on each image in turn (the package has no batched entry point)."""
        return [self.detect_faces(rgb, min_confidence) for rgb in images]


def _to_face(item: dict) -> Face:
    x, y, w, h = (float(v) for v in item["box"])
    keypoints = item["keypoints"]
    return Face(
        score=float(item["confidence"]),
        box=Box(x, y, x + max(w, 0.0), y + max(h, 0.0)),
        landmarks={name: Point(float(keypoints[name][0]), float(keypoints[name][1])) for name in LANDMARK_NAMES},
    )


def load_face_detector(implementation: str = "auto") -> FaceDetector:
    """MTCNN on the package's weights: our Keras 3 port ("keras") or the ``mtcnn`` package itself.

    "auto" picks the port: measured 1.5-2x faster than the package on this CPU with TensorFlow
    (docs/performance.md), and the only one that runs on JAX or torch backends. Both give the same
    faces (tests/models/test_mtcnn_keras.py).
    """
    if implementation == "package":
        return MtcnnFaceDetector()
    if implementation not in ("auto", "keras"):
        raise ValueError(f"unknown face detector {implementation!r}: use auto, keras or package")
    from picmetric_core.models.mtcnn_keras import load_keras_face_detector

    return load_keras_face_detector()
