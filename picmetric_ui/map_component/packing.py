"""The map's points as one compact binary file the browser reads without parsing: typed columns.

Layout: ``MAGIC`` (8 bytes), the header's length (uint32, little-endian), the header (UTF-8 JSON: ``meta``
and each column's ``name``, ``dtype``, ``offset``, ``length``), then the columns from the next multiple of 8
on, each at its ``offset`` from there and 8-byte aligned, so the browser views it in place as a typed array
(``frontend/map.js``: ``decode``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from picmetric_core.map.records import MapPoint

MAGIC = b"PMMAP1\0\0"
NONE = 0xFFFF  # no label
OBJECTS_PER_POINT = 4  # the hover names up to four detected objects
DTYPES = {"<f4": "f4", "<i4": "i4", "<u4": "u4", "<u2": "u2", "|u1": "u1"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def pack(columns: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> bytes:
    """``columns`` (1-D arrays of the types in ``DTYPES``) and ``meta`` (JSON-able) as one file."""
    little = {name: values.astype(values.dtype.newbyteorder("<"), copy=False) for name, values in columns.items()}
    specs, offset = [], 0
    for name, values in little.items():
        specs.append({"name": name, "dtype": DTYPES[values.dtype.str], "offset": offset, "length": len(values)})
        offset = _aligned(offset + values.nbytes)
    header = json.dumps({"meta": dict(meta), "columns": specs}, separators=(",", ":")).encode()
    start = _aligned(len(MAGIC) + 4 + len(header))
    out = bytearray(start + offset)
    out[: len(MAGIC)] = MAGIC
    out[len(MAGIC) : len(MAGIC) + 4] = len(header).to_bytes(4, "little")
    out[len(MAGIC) + 4 : len(MAGIC) + 4 + len(header)] = header
    for spec, values in zip(specs, little.values(), strict=True):
        at = start + spec["offset"]
        out[at : at + values.nbytes] = values.tobytes()
    return bytes(out)


def pack_points(points: Sequence[MapPoint]) -> bytes:
    """What the map draws and hovers of each point: place, uniqueness, name, top class, objects, faces, day.

    Labels (classes and objects) are indices into ``meta.labels`` (``NONE``: none); names are one UTF-8
    column, NUL-separated; ``day`` counts days since 1970-01-01 (UTC).
    """
    labels: dict[str, int] = {}

    def label(text: str | None) -> int:
        return NONE if text is None else labels.setdefault(text, len(labels))

    count = len(points)
    objects = np.full((count, OBJECTS_PER_POINT), NONE, np.uint16)
    for i, point in enumerate(points):
        for j, name in enumerate(point.objects[:OBJECTS_PER_POINT]):
            objects[i, j] = label(name)
    names = "\0".join((p.filename or p.md5[:12]).replace("\0", "") for p in points).encode()
    columns = {
        "x": np.fromiter((p.x for p in points), np.float32, count),
        "y": np.fromiter((p.y for p in points), np.float32, count),
        "uniqueness": np.fromiter((p.uniqueness for p in points), np.float32, count),
        "top": np.fromiter((label(p.top_class) for p in points), np.uint16, count),
        "objects": objects.reshape(-1),
        "faces": np.fromiter((p.has_faces for p in points), np.uint8, count),
        "day": np.fromiter((_day(p.created_at) for p in points), np.int32, count),
        "names": np.frombuffer(names, np.uint8),
    }
    if len(labels) >= NONE:
        raise ValueError(f"{len(labels)} distinct labels: the map's file holds fewer than {NONE}")
    return pack(columns, {"count": count, "labels": list(labels), "objects_per_point": OBJECTS_PER_POINT})


def pack_groups(groups: np.ndarray) -> bytes:
    """Each point's legend entry (``map_chart.Colouring.groups``)."""
    return pack({"groups": groups.astype(np.uint16, copy=False)}, {"count": len(groups)})


def _day(moment: datetime) -> int:
    """Days since 1970-01-01 in UTC (stored times without a zone are UTC)."""
    return ((moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - _EPOCH).days


def _aligned(offset: int) -> int:
    return -(-offset // 8) * 8
