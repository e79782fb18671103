"""The fidelity gate: whether a faster way of running a network gives what float32 gives, as a user sees it.

A candidate passes on a photo when, against float32 on the same photo:

- classifier: the same top-1 class and at least 4 of the same top-5 classes;
- detector: every detection scoring at least 0.25 in either is matched, same class, at IoU >= 0.9 with
  |score difference| <= 0.03 (the match may score under 0.25: a box at 0.26 against one at 0.24 is the same box);
- faces: every face scoring at least 0.9 in either is matched (IoU >= 0.5) and its five landmarks are
  within 1.5 px.

``PICMETRIC_PRECISION=auto`` keeps only what passes on the calibration photos (:mod:`.choice`), and
tests/models/test_fidelity.py holds every engine this machine runs to it on the suite's photos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from picmetric_core.results import Classification, Detection, Face

TOP_K = 5
MIN_COMMON_TOP5 = 4
DETECTION_FLOOR = 0.25
MIN_DETECTION_IOU = 0.9
MAX_SCORE_DELTA = 0.03
FACE_FLOOR = 0.9
MIN_FACE_IOU = 0.5
MAX_LANDMARK_PX = 1.5


@dataclass(frozen=True)
class Fidelity:
    """How far a candidate's results are from float32's, worst case over the photos compared.

    ``failures`` says, for people, each photo and result that broke a rule; empty when it passed.
    """

    kind: str = ""  # "classes", "detections" or "faces": what was compared
    worst_common_top5: int = TOP_K
    top1_changed: int = 0
    worst_detection_iou: float = 1.0
    worst_score_delta: float = 0.0
    worst_landmark_px: float = 0.0
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    def merged(self, other: Fidelity) -> Fidelity:
        return Fidelity(
            kind=self.kind or other.kind,
            worst_common_top5=min(self.worst_common_top5, other.worst_common_top5),
            top1_changed=self.top1_changed + other.top1_changed,
            worst_detection_iou=min(self.worst_detection_iou, other.worst_detection_iou),
            worst_score_delta=max(self.worst_score_delta, other.worst_score_delta),
            worst_landmark_px=max(self.worst_landmark_px, other.worst_landmark_px),
            failures=self.failures + other.failures,
        )

    def summary(self) -> str:
        """The worst case, in the terms of what was compared."""
        if self.kind == "classes":
            return f"top-1 changed on {self.top1_changed} photo(s), top-5 in common >= {self.worst_common_top5}"
        if self.kind == "detections":
            return f"detection IoU >= {self.worst_detection_iou:.3f}, |score delta| <= {self.worst_score_delta:.4f}"
        if self.kind == "faces":
            return f"landmarks within {self.worst_landmark_px:.2f} px"
        return "nothing compared"


def compare_classes(
    reference: Sequence[Classification], candidate: Sequence[Classification], photo: str = ""
) -> Fidelity:
    """
    >>> a = [Classification(n, i, 0.1) for i, n in enumerate("abcde")]
    >>> compare_classes(a, a[:4] + [Classification("z", 9, 0.1)]).passed
    True
    >>> compare_classes(a, a[1:2] + a[:1] + a[2:]).failures
    ('top-1 a became b',)
    """
    ours = {c.class_id for c in reference[:TOP_K]}
    theirs = {c.class_id for c in candidate[:TOP_K]}
    common = len(ours & theirs)
    failures = []
    top1_changed = int(reference[0].class_id != candidate[0].class_id)
    if top1_changed:
        failures.append(f"{photo}top-1 {reference[0].label} became {candidate[0].label}")
    if common < MIN_COMMON_TOP5:
        failures.append(f"{photo}only {common} of the top-5 classes in common")
    return Fidelity(kind="classes", worst_common_top5=common, top1_changed=top1_changed, failures=tuple(failures))


def compare_detections(reference: Sequence[Detection], candidate: Sequence[Detection], photo: str = "") -> Fidelity:
    """Each side's detections above the floor matched in the other's (raw) list."""
    worst_iou, worst_delta, failures = 1.0, 0.0, []
    for shown, others in ((reference, candidate), (candidate, reference)):
        for detection in (d for d in shown if d.score >= DETECTION_FLOOR):
            match = max(
                (o for o in others if o.class_id == detection.class_id),
                key=lambda o: detection.box.iou(o.box) - abs(o.score - detection.score),
                default=None,
            )
            iou = detection.box.iou(match.box) if match else 0.0
            delta = abs(match.score - detection.score) if match else 1.0
            worst_iou, worst_delta = min(worst_iou, iou), max(worst_delta, delta)
            if iou < MIN_DETECTION_IOU or delta > MAX_SCORE_DELTA:
                failures.append(
                    f"{photo}{detection.label} {detection.score:.3f}: best match IoU {iou:.3f}, Δ {delta:.3f}"
                )
    return Fidelity(
        kind="detections", worst_detection_iou=worst_iou, worst_score_delta=worst_delta, failures=tuple(failures)
    )


def compare_faces(reference: Sequence[Face], candidate: Sequence[Face], photo: str = "") -> Fidelity:
    """Each side's faces above the floor matched in the other's, landmark by landmark."""
    worst_px, failures = 0.0, []
    for shown, others in ((reference, candidate), (candidate, reference)):
        for face in (f for f in shown if f.score >= FACE_FLOOR):
            match = max(others, key=lambda o: face.box.iou(o.box), default=None)
            if match is None or face.box.iou(match.box) < MIN_FACE_IOU:
                failures.append(f"{photo}a face at {face.score:.3f} has no match")
                worst_px = math.inf
                continue
            px = max(
                math.hypot(point.x - match.landmarks[name].x, point.y - match.landmarks[name].y)
                for name, point in face.landmarks.items()
            )
            worst_px = max(worst_px, px)
            if px > MAX_LANDMARK_PX:
                failures.append(f"{photo}landmarks moved {px:.2f} px")
    return Fidelity(kind="faces", worst_landmark_px=worst_px, failures=tuple(failures))
