"""What the Video page and History's video cards show, computed from the typed video results.

Pure functions: results in, plain values and tables out; no widgets.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from picmetric_core.results import Point
from picmetric_core.video.results import (
    CountingLine,
    Crossing,
    FrameResult,
    LineCount,
    StoredVideo,
    Track,
    VideoAnalysis,
    VideoInfo,
)

FACES = "faces"
MAX_SERIES = 8  # classes drawn on the timeline, most seen first; the rest are summed as "other"
OTHER = "other"
TRACK_COLUMNS = ["Crop", "Class", "Seen", "Best score", "Track", "Frames"]
COUNT_COLUMNS = ["Class", "In", "Out", "Total"]


def clock(seconds: float) -> str:
    """A time in the clip as minutes, seconds and tenths.

    Example:
        >>> clock(83.46)
        '1:23.5'
    """
    tenths = round(max(seconds, 0.0) * 10)
    minutes, tenths = divmod(tenths, 600)
    return f"{minutes}:{tenths // 10:02d}.{tenths % 10}"


def duration_text(seconds: float) -> str:
    """A clip's length for a card, e.g. ``"12 s"``, ``"3 min 05 s"`` or ``"10 min"``."""
    whole = round(seconds)
    if whole < 60:
        return f"{max(seconds, 0.0):.1f} s" if seconds < 10 else f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest:02d} s" if rest else f"{minutes} min"


def info_text(info: VideoInfo) -> str:
    """One line about a clip, e.g. "12.0 s · 640×360 · 25 fps · h264 in mp4 · no sound"."""
    sound = "with sound" if info.has_audio else "no sound"
    return (
        f"{duration_text(info.duration_s)} · {info.width}×{info.height} · {info.fps:g} fps · "
        f"{info.codec} in {info.container} · {sound}"
    )


def top_objects_text(top_objects: Sequence[tuple[str, int]], limit: int = 3) -> str:
    """The objects a clip shows most, e.g. "3 persons, 1 car"; "no objects" when none was tracked."""
    parts = [f"{count} {label}{'s' if count != 1 else ''}" for label, count in top_objects[:limit]]
    return ", ".join(parts) or "no objects"


def card_text(video: StoredVideo) -> str:
    """A video card's second line: when, how long, what it shows."""
    created = video.created_at[:16].replace("T", " ")
    return f"{created} · {duration_text(video.analysis.info.duration_s)} · {top_objects_text(video.top_objects)}"


def series_names(frames: Iterable[FrameResult], limit: int = MAX_SERIES) -> list[str]:
    """The classes the timeline draws one line for: those seen in most frames first, at most ``limit``."""
    seen = Counter(label for frame in frames for label in {o.label for o in frame.objects})
    return [label for label, _ in seen.most_common(limit)]


def timeline_table(frames: Sequence[FrameResult], limit: int = MAX_SERIES) -> pd.DataFrame:
    """One row per sampled frame: its time, how many objects of each class (the rest summed as "other")
    and how many faces it holds.

    Example:
        >>> timeline_table(()).columns.tolist()
        ['time_s', 'faces']
    """
    names = series_names(frames, limit)
    rows = []
    for frame in sorted(frames, key=lambda f: f.time_s):
        kinds = Counter(o.label for o in frame.objects)
        row: dict[str, float] = {"time_s": frame.time_s}
        row.update({name: kinds.pop(name, 0) for name in names})
        if len(names) == limit:
            row[OTHER] = sum(kinds.values())
        row[FACES] = len(frame.faces)
        rows.append(row)
    columns = ["time_s", *names, *([OTHER] if len(names) == limit else []), FACES]
    table = pd.DataFrame(rows, columns=columns)
    if OTHER in table and not table[OTHER].any():
        table = table.drop(columns=OTHER)
    return table


def class_ids(frames: Iterable[FrameResult]) -> dict[str, int]:
    """Each label's class id (for its colour, the same as on the annotated clip)."""
    return {o.label: o.class_id for frame in frames for o in frame.objects}


def track_rows(tracks: Sequence[Track], crops: dict[str, str]) -> pd.DataFrame:
    """The track table: one row per track, longest seen first: its best crop as a data URI (``crops``
    maps a crop key to one; a track without a crop gets none), class, from–to, best score in percent."""
    rows = [
        {
            "Crop": crops.get(track.crop_key or ""),
            "Class": track.label,
            "Seen": f"{clock(track.first_seen_s)}–{clock(track.last_seen_s)}",
            "Best score": round(track.best_score * 100),
            "Track": f"#{track.track_id}",
            "Frames": track.frames,
        }
        for track in tracks_in_table_order(tracks)
    ]
    return pd.DataFrame(rows, columns=TRACK_COLUMNS)


def tracks_in_table_order(tracks: Sequence[Track]) -> list[Track]:
    """The tracks in :func:`track_rows`'s order (a selected row's index points into this)."""
    return sorted(tracks, key=lambda t: (-(t.last_seen_s - t.first_seen_s), t.track_id))


def jpeg_data_uri(data: bytes) -> str:
    """A JPEG's bytes as a ``data:`` URI, for an image column."""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def count_rows(counts: Sequence[LineCount]) -> pd.DataFrame:
    """In and out crossings of the counting line per class, busiest first."""
    rows = [
        {"Class": c.label, "In": c.inward, "Out": c.outward, "Total": c.inward + c.outward}
        for c in sorted(counts, key=lambda c: (-(c.inward + c.outward), c.label))
    ]
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def counts_over_time(crossings: Sequence[Crossing]) -> pd.DataFrame:
    """Running totals of crossings: one row per crossing with ``time_s``, ``series`` ("person in",
    "person out", …) and ``total`` so far for that series."""
    totals: Counter[str] = Counter()
    rows = []
    for crossing in sorted(crossings, key=lambda c: c.time_s):
        series = f"{crossing.label} {crossing.direction}"
        totals[series] += 1
        rows.append({"time_s": crossing.time_s, "series": series, "total": totals[series]})
    return pd.DataFrame(rows, columns=["time_s", "series", "total"])


def summary_text(analysis: VideoAnalysis) -> str:
    """One line: how many frames were analysed, the tracks by class, the faces seen and how long it took."""
    kinds = Counter(t.label for t in analysis.tracks)
    objects = ", ".join(f"{n} {label}{'s' if n != 1 else ''}" for label, n in kinds.most_common()) or "no objects"
    faces = max((len(f.faces) for f in analysis.frames), default=0)
    face_text = f"up to {faces} face{'s' if faces != 1 else ''} at once" if faces else "no faces"
    return (
        f"{len(analysis.frames)} frames analysed at {analysis.sample_fps:g} per second · {objects} · {face_text} · "
        f"took {analysis.seconds:.1f} s"
    )


def line_from_points(points: Sequence[Point]) -> CountingLine | None:
    """The counting line through the first two of ``points`` (``None`` until there are two distinct ones)."""
    if len(points) < 2 or points[0] == points[1]:
        return None
    return CountingLine(start=points[0], end=points[1])


def frame_point(click: dict, natural_width: int, natural_height: int) -> Point:
    """A click on the shown frame (``x``, ``y`` of an image shown ``width`` × ``height`` pixels) in the
    frame's own pixels.

    Example:
        >>> frame_point({"x": 100, "y": 50, "width": 320, "height": 180}, 640, 360)
        Point(x=200.0, y=100.0)
    """
    scale_x = natural_width / max(click.get("width") or natural_width, 1)
    scale_y = natural_height / max(click.get("height") or natural_height, 1)
    x = min(max(click["x"] * scale_x, 0.0), natural_width - 1.0)
    y = min(max(click["y"] * scale_y, 0.0), natural_height - 1.0)
    return Point(x=round(x, 1), y=round(y, 1))


def seek_time(event: Mapping | None) -> float | None:
    """The time of the first point picked on the timeline (a plotly selection event), if any.

    Example:
        >>> seek_time({"selection": {"points": [{"x": 1.4, "y": 2, "curve_number": 0}]}})
        1.4
    """
    points = ((event or {}).get("selection") or {}).get("points") or []
    for point in points:
        x = point.get("x")
        if isinstance(x, int | float):
            return float(x)
    return None


def selected_row(event: Mapping | None) -> int | None:
    """The index of the row picked in a table (a dataframe selection event), if any.

    Example:
        >>> selected_row({"selection": {"rows": [2], "columns": []}})
        2
    """
    rows = ((event or {}).get("selection") or {}).get("rows") or []
    return rows[0] if rows else None
