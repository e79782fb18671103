"""What the History map sends the browser: the points file read back as map.js reads it, the colours and legend,
the served names, a selection turned back into md5s, a hovered point's thumbnail, and the version a kept map
read is checked against (no browser here; tests/ui/test_history_map.py drives one)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from picmetric_core.map.records import Cluster, MapPoint
from picmetric_core.map.view import map_version
from picmetric_core.service import PicMetricService
from picmetric_core.store.database import session_factory
from picmetric_ui.map_chart import MAX_GROUPS, OTHER, OUTSIDE, colouring
from picmetric_ui.map_component import MapSelection, hovered_of, selection_of
from picmetric_ui.map_component.packing import MAGIC, NONE, pack_groups, pack_points
from picmetric_ui.map_component.served import ServedFolder
from picmetric_ui.map_views import DrawnPoints, selected_md5s
from tests.support.api import NoNetworks
from tests.support.map_rows import add_photos, themed_vectors
from tests.support.rows import md5_of
from tests.support.services import make_settings

TYPES = {"f4": "<f4", "i4": "<i4", "u4": "<u4", "u2": "<u2", "u1": "u1"}


def read(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """A map file's meta and columns, read as frontend/map.js's ``decode`` reads them."""
    assert data[: len(MAGIC)] == MAGIC
    length = int.from_bytes(data[8:12], "little")
    header = json.loads(data[12 : 12 + length])
    start = -(-(12 + length) // 8) * 8
    columns = {}
    for column in header["columns"]:
        assert (start + column["offset"]) % 8 == 0, "a typed array must start aligned"
        dtype = np.dtype(TYPES[column["dtype"]])
        columns[column["name"]] = np.frombuffer(data, dtype, column["length"], start + column["offset"])
    return header["meta"], columns


def point(md5: str, *, x: float = 0.0, label: str | None = "dog", objects=(), cluster: int = 0, **more) -> MapPoint:
    fields = {
        "y": 0.0,
        "uniqueness": 0.5,
        "filename": f"{md5}.jpg",
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
        "has_faces": False,
        "batch": None,
        "thumbnail_key": "",
    } | more
    return MapPoint(md5=md5, x=x, cluster=cluster, top_class=label, objects=tuple(objects), **fields)


def test_the_points_file_holds_every_point_as_the_browser_reads_it():
    points = [
        point("a" * 32, x=1.5, y=-2.0, objects=("dog", "ball", "cup", "cat", "car"), has_faces=True, uniqueness=0.25),
        point("b" * 32, x=-3.0, label=None, filename=None, created_at=datetime(1970, 1, 3)),
        point("c" * 32, filename="naïve\0name.jpg"),
    ]

    meta, columns = read(pack_points(points))
    labels = meta["labels"]

    assert meta["count"] == 3
    assert columns["x"].tolist() == [1.5, -3.0, 0.0] and columns["y"].tolist() == [-2.0, 0.0, 0.0]
    assert columns["uniqueness"].tolist() == [0.25, 0.5, 0.5]
    assert [labels[i] if i != NONE else None for i in columns["top"]] == ["dog", None, "dog"]
    objects = columns["objects"].reshape(3, meta["objects_per_point"])
    assert [labels[i] for i in objects[0]] == ["dog", "ball", "cup", "cat"]  # four at most
    assert objects[1].tolist() == [NONE] * 4
    assert columns["faces"].tolist() == [1, 0, 0]
    december = (datetime(2026, 12, 1) - datetime(1970, 1, 1)).days
    assert columns["day"].tolist() == [december, 2, december]  # a time without a zone is UTC
    assert bytes(columns["names"]).decode().split("\0") == ["a" * 32 + ".jpg", "b" * 12, "naïvename.jpg"]


def test_the_groups_file_and_the_legend():
    points = [point(f"p{i}", label=f"class {i % (MAX_GROUPS + 2)}") for i in range(40)] + [point("none", label=None)]
    matching = frozenset(p.md5 for p in points[1:])

    found = colouring(points, matching, "Top class", ())
    _, columns = read(pack_groups(found.groups))

    assert columns["groups"].tolist() == found.groups.tolist()
    assert found.groups[0] == OUTSIDE and found.outside == 1
    assert len(found.legend) == MAX_GROUPS + 1 and found.legend[-1].colour == OTHER  # the rest share "other"
    assert found.legend[-1].name == f"other ({found.legend[-1].count})"
    assert sum(e.count for e in found.legend) == len(points) - 1
    assert found.legend[0].name == "class 1 (4)"  # the most frequent first


def test_clusters_are_named_by_label_and_dates_run_oldest_to_newest():
    clusters = (Cluster(0, "dog", 2), Cluster(1, "cat", 1))
    points = [point("a", cluster=0), point("b", cluster=1), point("c", cluster=0), point("d", cluster=-1)]
    everything = frozenset("abcd")

    by_cluster = colouring(points, everything, "Cluster", clusters)
    days = [point(f"d{i}", created_at=datetime(2026, 1, 1 + i % 3, tzinfo=UTC)) for i in range(6)]
    by_date = colouring(days, frozenset(p.md5 for p in days), "Date", ())

    assert [e.name for e in by_cluster.legend] == ["dog · 2", "cat · 1", "in no cluster (1)"]
    assert by_cluster.groups.tolist() == [0, 1, 0, 2]
    assert by_date.gradient and [e.name for e in by_date.legend] == [f"2026-01-0{d} (2)" for d in (1, 2, 3)]


def test_a_selection_comes_back_as_the_md5s_of_its_points():
    drawn = DrawnPoints(view=None, file="points-new.bin", md5s=("a", "b", "c"), index={"a": 0, "b": 1, "c": 2})

    def chosen(value, selection_round=2):
        return selected_md5s(selection_of(value), drawn, selection_round)

    assert chosen({"points": "points-new.bin", "round": 2, "indices": [2, 0, 2, 7]}) == ["c", "a"]
    assert chosen({"points": "points-new.bin", "round": 1, "indices": [0]}) == []  # cleared since
    assert chosen({"points": "points-gone.bin", "round": 2, "indices": [0]}) == []  # a file no longer known
    assert chosen(None) == [] and chosen({"indices": ["x"]}) == []
    assert selection_of({"points": "p.bin", "round": 3, "indices": [1]}) == MapSelection("p.bin", (1,), 3)


def test_served_files_are_named_by_content_under_a_secret(tmp_path):
    one, other = ServedFolder(), ServedFolder()
    try:
        name = one.publish(b"points", "points")
        assert one.publish(b"points", "points") == name  # the browser fetches the same data once
        assert one.publish(b"other", "points") != name
        assert other.publish(b"points", "points") != name  # not guessable from the content alone
        assert gzip.decompress((one.root / name).read_bytes()) == b"points"
        thumb = one.publish_jpeg(b"\xff\xd8jpeg", "thumb")
        assert thumb.startswith("thumb-") and thumb.endswith(".jpg")  # sent as image/jpeg, for an <img>
        assert (one.root / thumb).read_bytes() == b"\xff\xd8jpeg" and one.publish_jpeg(
            b"\xff\xd8jpeg", "thumb"
        ) == thumb
        assert other.publish_jpeg(b"\xff\xd8jpeg", "thumb") != thumb
        assert {p.name for p in one.root.iterdir()} >= {"index.html", "map.js"}
    finally:
        for folder in (one, other):
            for path in folder.root.iterdir():
                path.unlink()
            folder.root.rmdir()


def test_a_hover_asks_for_one_point_and_keeps_the_selection():
    value = {"points": "points-a.bin.gz", "round": 1, "indices": [4, 2], "hover": 7, "sent": 3}

    assert hovered_of(value) == ("points-a.bin.gz", 7)
    assert selection_of(value) == MapSelection("points-a.bin.gz", (4, 2), 1)  # every value carries the selection
    assert hovered_of({**value, "hover": -1}) is None and hovered_of({**value, "hover": True}) is None
    assert hovered_of({"hover": 3}) is None and hovered_of(None) is None


@pytest.mark.parametrize("count", [0, 1])
def test_tiny_maps_pack(count):
    meta, columns = read(pack_points([point("a")] * count))
    assert meta["count"] == count and len(columns["x"]) == count


def test_the_map_version_changes_with_what_a_map_read_shows(tmp_path):
    service = PicMetricService(make_settings(tmp_path), NoNetworks())
    sessions = session_factory(service.engine)
    try:
        empty = map_version(sessions)
        with sessions.begin() as session:
            add_photos(session, ["one", "two"], themed_vectors(1, 2), ["dog", "dog"])
        two = map_version(sessions)
        service.fit_map()
        fitted = map_version(sessions)
        service.delete([md5_of("one")])
        deleted = map_version(sessions)

        assert len({empty, two, fitted, deleted}) == 4
        assert map_version(sessions) == deleted  # nothing changed: the page keeps its read
    finally:
        service.close()
