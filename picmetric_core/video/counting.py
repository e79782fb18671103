"""Counting tracks that cross a line, each crossing once, by class and direction.

A track's anchor (its box's centre) is followed from sampled frame to sampled frame. Walking along the line
from ``start`` to ``end`` as it is drawn on the screen, the right-hand side is "in": a horizontal line drawn
left to right counts objects moving down the picture as "in", a vertical line drawn top to bottom counts
objects moving to the left as "in". A crossing counts when the anchor passes from one side to the other
within the segment's length (not beyond its ends). Near the line the side is not trusted until the anchor is
at least :data:`HYSTERESIS_PX` away, so a box jittering on the line counts once, not at every frame.

Only tracks count: detections without a track id (the tracker's -1) never cross anything.

Example:
    >>> from picmetric_core.results import Point
    >>> counter = LineCounter(CountingLine(Point(0, 50), Point(100, 50)))
    >>> counter.update(1, "dog", 0.0, Point(50, 10)), counter.update(1, "dog", 0.2, Point(50, 90))
    (None, Crossing(track_id=1, label='dog', time_s=0.2, direction='in'))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from picmetric_core.results import Box, Point
from picmetric_core.video.results import CountingLine, Crossing, FrameResult, LineCount, Track

HYSTERESIS_PX = 6.0


@dataclass
class _Side:
    side: int  # -1 left, +1 right of the line
    label: str


def anchor(box: Box) -> Point:
    """The point of a box that crosses the line: its centre."""
    return Point((box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2)


class LineCounter:
    """Crossings of one line, fed one track position at a time in time order."""

    def __init__(self, line: CountingLine) -> None:
        self.line = line
        self._dx = line.end.x - line.start.x
        self._dy = line.end.y - line.start.y
        self._length = (self._dx**2 + self._dy**2) ** 0.5
        if self._length == 0:
            raise ValueError("a counting line needs two different points")
        self._sides: dict[int, _Side] = {}
        self.crossings: list[Crossing] = []

    def side_of(self, point: Point) -> tuple[float, float]:
        """The signed distance of ``point`` from the line (> 0: right-hand, "in"), and where along it (0..1)."""
        rx, ry = point.x - self.line.start.x, point.y - self.line.start.y
        distance = (self._dx * ry - self._dy * rx) / self._length
        along = (self._dx * rx + self._dy * ry) / self._length**2
        return distance, along

    def update(self, track_id: int, label: str, time_s: float, point: Point) -> Crossing | None:
        """Where track ``track_id`` is at ``time_s``; the crossing, when this move crossed the line."""
        distance, along = self.side_of(point)
        if abs(distance) < HYSTERESIS_PX:
            return None
        side = 1 if distance > 0 else -1
        previous = self._sides.get(track_id)
        self._sides[track_id] = _Side(side, label)
        if previous is None or previous.side == side or not 0.0 <= along <= 1.0:
            return None
        crossing = Crossing(track_id, label, time_s, "in" if side > 0 else "out")
        self.crossings.append(crossing)
        return crossing


def count_crossings(
    line: CountingLine, frames: Iterable[FrameResult], tracks: Iterable[Track] = ()
) -> tuple[tuple[Crossing, ...], tuple[LineCount, ...]]:
    """Every crossing of ``line`` by the tracked objects of ``frames``, and the counts per class.

    Crossings are labelled with their track's class (``tracks``; the frame's own label when a track is not
    given). Faces do not cross: only objects.
    """
    labels = {track.track_id: track.label for track in tracks}
    counter = LineCounter(line)
    for frame in frames:
        for item in frame.objects:
            if item.track_id is not None:
                counter.update(item.track_id, labels.get(item.track_id, item.label), frame.time_s, anchor(item.box))
    return tuple(counter.crossings), line_counts(counter.crossings)


def line_counts(crossings: Iterable[Crossing]) -> tuple[LineCount, ...]:
    """In and out counts per class, most crossings first.

    Example:
        >>> line_counts([Crossing(1, "car", 1.0, "in"), Crossing(2, "car", 2.0, "out"), Crossing(3, "dog", 2.5, "in")])
        (LineCount(label='car', inward=1, outward=1), LineCount(label='dog', inward=1, outward=0))
    """
    totals: dict[str, list[int]] = {}
    for crossing in crossings:
        counts = totals.setdefault(crossing.label, [0, 0])
        counts[0 if crossing.direction == "in" else 1] += 1
    ordered = sorted(totals.items(), key=lambda item: (-sum(item[1]), item[0]))
    return tuple(LineCount(label, inward, outward) for label, (inward, outward) in ordered)
