"""The map's points as one compact binary file the browser reads without parsing: typed columns.

Layout: ``MAGIC`` (8 bytes), the header's length (uint32, little-endian), the header (UTF-8 JSON: ``meta``
and each column's ``name``, ``dtype``, ``offset``, ``length``), then the columns from the next multiple of 8
on, each at its ``offset`` from there and 8-byte aligned, so the browser views it in place as a typed array
(``frontend/map.js``: ``decode``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from picmetric_core.map.records import MapPoint, MapPoints

MAGIC = b"PMMAP1\0\0"
NONE = 0xFFFF  # no label
OBJECTS_PER_POINT = 4  # the hover names up to four detected objects
DTYPES = {"<f4": "f4", "<i4": "i4", "<u4": "u4", "<u2": "u2", "|u1": "u1"}


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
    column, NUL-separated; ``day`` counts days since 1970-01-01 (UTC). Made column by column from
    :class:`~picmetric_core.map.records.MapPoints` (other points are made columns first).
    """
    columns = MapPoints.of(points)
    count = len(columns)
    if len(columns.labels) >= NONE:
        raise ValueError(f"{len(columns.labels)} distinct labels: the map's file holds fewer than {NONE}")
    objects = np.full((count, OBJECTS_PER_POINT), NONE, np.uint16)
    starts, counts = columns.object_start[:-1], np.diff(columns.object_start)
    for j in range(OBJECTS_PER_POINT):
        has = counts > j
        objects[has, j] = columns.object_codes[starts[has] + j]
    names = "\0".join(
        (name or md5[:12]).replace("\0", "") for name, md5 in zip(columns.filename, columns.md5, strict=True)
    ).encode()
    packed = {
        "x": columns.x.astype(np.float32),
        "y": columns.y.astype(np.float32),
        "uniqueness": columns.uniqueness.astype(np.float32),
        "top": np.where(columns.top_class >= 0, columns.top_class, NONE).astype(np.uint16),
        "objects": objects.reshape(-1),
        "faces": columns.has_faces.astype(np.uint8),
        "day": columns.days.astype(np.int32),
        "names": np.frombuffer(names, np.uint8),
    }
    meta = {"count": count, "labels": list(columns.labels), "objects_per_point": OBJECTS_PER_POINT}
    return pack(packed, meta)


def pack_groups(groups: np.ndarray) -> bytes:
    """Each point's legend entry (``map_chart.Colouring.groups``)."""
    return pack({"groups": groups.astype(np.uint16, copy=False)}, {"count": len(groups)})


def _aligned(offset: int) -> int:
    return -(-offset // 8) * 8
