"""Photos made up for the map's tests and bench: analyses with embeddings around a few centres, no networks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from picmetric_core.results import Signature
from picmetric_core.similar.signature import compact_embedding
from picmetric_core.store.orm import insert_analyses
from tests.support.rows import make_analysis, make_row

CLASSIFIER = "EfficientNet-Lite0"
DIM = 1280
START = datetime(2026, 12, 1, tzinfo=UTC)


def themed_vectors(themes: int, per_theme: int, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """``themes × per_theme`` non-negative vectors (as pooled features are), ``per_theme`` around each centre."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.standard_normal((themes, DIM))).astype(np.float32)
    members = np.repeat(centres, per_theme, axis=0)
    return members + spread * np.abs(rng.standard_normal(members.shape)).astype(np.float32) * members.std()


def add_photos(
    session: Session,
    names: list[str],
    vectors: np.ndarray | None,
    labels: list[str],
    *,
    first: int = 0,
    faces: list[bool] | None = None,
) -> None:
    """Store one analysis per name: top class ``labels[i]``, embedding ``vectors[i]`` (none without ``vectors``)."""
    rows = []
    for i, name in enumerate(names):
        face_scores = [0.99] if faces and faces[i] else []
        analysis = make_analysis(name, classes=[(labels[i], 0.9)], objects=[(labels[i], 0.8)], face_scores=face_scores)
        if vectors is not None:
            analysis = replace(
                analysis, signature=Signature(i, compact_embedding(vectors[i]), embedding_model=CLASSIFIER)
            )
        rows.append(make_row(analysis, f"{name}.jpg", START + timedelta(minutes=first + i)))
    insert_analyses(session, rows)
