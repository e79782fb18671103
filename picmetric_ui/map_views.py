"""The History map as served to the browser, kept until what it shows changes.

A map read takes seconds at 100,000 photos, so it is kept (per settings and filters) for as long as
:func:`~picmetric_core.map.view.map_version` (a query of milliseconds, asked on every rerun) stays the same,
up to ``MAX_AGE_S``: a rerun such as a lasso's reads nothing again, however long the map has been open, and a
photo stored, deleted or placed shows on the next rerun. Each read's points are served as one file
(``map_component.served``) and each colouring of them as another, made when first asked for.

A read is also kept on disk (``KEPT_DIR`` in the data folder, one file per database, filters and version), so
that a new server process (a restart) finds it while the version it was read at is still the database's:
its first open of the map loads a file of ~20 MB in a fraction of a second instead of reading 100,000 points
again. Only a read that nothing changed under (the version the same before and after, no photo waiting
for a place) is kept there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from picmetric_core.history import HistoryQuery
from picmetric_core.map.view import KEPT_FORMAT, MapView, load_view, map_version, save_view
from picmetric_core.store.database import database_errors, session_factory
from picmetric_ui import resources
from picmetric_ui.map_chart import colouring, marker_px
from picmetric_ui.map_component import MapFiles, MapSelection, served
from picmetric_ui.map_component.packing import pack_groups, pack_points

MAX_AGE_S = 300  # a read this old is read again (it places photos stored since, 200 a read)
MAX_VIEWS = 8
RECENT_FILES = 16  # points files whose md5s are kept, so that a selection made on one still resolves
KEPT_DIR = "map-reads"  # in the data folder: reads kept for the next server process
KEPT_FILES = 8  # the newest kept; older ones are removed
KEEP_AFTER_S = 3.0  # a read is written this long after it is served, not while the page waits for it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrawnPoints:
    """A map read as served: its points file, and the md5s in that file's order."""

    view: MapView
    file: str
    md5s: tuple[str, ...]
    index: dict[str, int]
    _files: dict[str, MapFiles] = field(default_factory=dict, repr=False, compare=False)

    def files(self, colour_by: str) -> MapFiles:
        """The points and their colours under ``colour_by``, served (made once per colouring)."""
        if colour_by not in self._files:
            view = self.view
            colours = colouring(view.points, view.matching, colour_by, view.fit.clusters if view.fit else ())
            self._files[colour_by] = MapFiles(
                points=self.file,
                groups=served.publish(pack_groups(colours.groups), "groups"),
                count=len(view.points),
                legend=colours.legend,
                outside=colours.outside,
                gradient=colours.gradient,
                marker_px=marker_px(len(view.points)),
            )
        return self._files[colour_by]


@dataclass(frozen=True)
class _Kept:
    versions: frozenset[tuple[int | str | None, ...]]  # before and after the read (which may place photos)
    drawn: DrawnPoints
    made_at: float


_kept: OrderedDict[tuple[str, HistoryQuery], _Kept] = OrderedDict()
_recent_md5s: OrderedDict[str, tuple[str, ...]] = OrderedDict()
_lock = threading.Lock()
_reading: dict[tuple[str, HistoryQuery], threading.Lock] = {}


def drawn_points(query: HistoryQuery) -> DrawnPoints:
    """The map for these filters (``query``'s paging and order are ignored by the read), as served."""
    service = resources.service()
    settings = resources.settings()
    key = (resources.settings_key(settings), query)
    sessions = session_factory(service.engine)
    with _lock:
        reading = _reading.setdefault(key, threading.Lock())
    with reading:  # one read per filters at a time; other sessions wait for it and share it
        with database_errors(service.engine):
            version = map_version(sessions)
        kept = _kept.get(key)
        if kept is not None and version in kept.versions and time.monotonic() - kept.made_at < MAX_AGE_S:
            with _lock:
                _kept.move_to_end(key)
            return kept.drawn
        on_disk = Path(settings.data_dir) / KEPT_DIR / _kept_name(settings.resolved_database_url, query, version)
        view = _load(on_disk)  # a read kept at this version (by an earlier process)
        after = version
        if view is None:
            view = service.map_view(query)
            with database_errors(service.engine):
                after = map_version(sessions)
            if after == version and view.unplaced == 0:  # nothing changed under the read
                keeping = threading.Timer(KEEP_AFTER_S, _keep, (view, on_disk))  # once the page has drawn it
                keeping.daemon = True
                keeping.start()
        drawn = _served(view)
        with _lock:
            _kept[key] = _Kept(frozenset({version, after}), drawn, time.monotonic())
            _kept.move_to_end(key)
            while len(_kept) > MAX_VIEWS:
                _reading.pop(_kept.popitem(last=False)[0], None)
        return drawn


def selected_md5s(selection: MapSelection | None, drawn: DrawnPoints, selection_round: int) -> list[str]:
    """The md5s of a selection made in this round (one made on an earlier points file resolves by that file)."""
    if selection is None or selection.selection_round != selection_round:
        return []
    md5s = drawn.md5s if selection.points == drawn.file else _recent_md5s.get(selection.points, ())
    return list(dict.fromkeys(md5s[i] for i in selection.indices if 0 <= i < len(md5s)))


def clear() -> None:
    """Forget every kept read (after a refit or a delete in this process)."""
    with _lock:
        _kept.clear()


def _kept_name(database: str, query: HistoryQuery, version: tuple[int | str | None, ...]) -> str:
    """The file a read is kept in on disk: by database, filters (a query's fields are plain values, so its
    ``repr`` is the same in every process) and version; not by the other settings (a new models folder, say,
    changes no map)."""
    digest = hashlib.sha256(repr((KEPT_FORMAT, database, query, version)).encode()).hexdigest()[:40]
    return f"{digest}.npz"


def _load(path: Path) -> MapView | None:
    if not path.exists():
        return None
    try:
        view = load_view(path)
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:  # damaged: read again
        log.warning("could not load the kept map read %s: %s", path, error)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    with contextlib.suppress(OSError):
        path.touch()  # recently used: pruned last
    return view


def _keep(view: MapView, path: Path) -> None:
    """Writes a read for later processes (on a thread of its own: the page does not wait for it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_view(view, path)
        kept = sorted(path.parent.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[KEPT_FILES:]:
            old.unlink(missing_ok=True)
        for partial in path.parent.glob("*.part"):  # left by a process that stopped while writing
            if time.time() - partial.stat().st_mtime > 60:
                partial.unlink(missing_ok=True)
    except OSError as error:  # a read-only or full data folder: the map is read again after a restart
        log.warning("could not keep the map read in %s: %s", path.parent, error)


def _served(view: MapView) -> DrawnPoints:
    name = served.publish(pack_points(view.points), "points")
    md5s = view.points.md5
    with _lock:
        _recent_md5s[name] = md5s
        _recent_md5s.move_to_end(name)
        while len(_recent_md5s) > RECENT_FILES:
            _recent_md5s.popitem(last=False)
    return DrawnPoints(view, name, md5s, dict(zip(md5s, range(len(md5s)), strict=True)))
