"""How long does History → Map take in Chromium with many photos: drawing it, and a lasso narrowing the gallery?

Runs the real Streamlit server (127.0.0.1 only) on a folder ``bench/map_bench.py --data DIR`` seeded and
fitted, and headless Chromium (no GPU here: the map's 2-D canvas is drawn in software), and times:

- **open**: from the click on the Map switch until every point is painted (the server's read of the map,
  the points and colour files written and fetched, the component's draw); first with the page's caches
  cold (a new server process: what it finds is the read an earlier process kept on disk at the same
  version, if any; ``--no-kept`` removes those first, so the points are read from the database), then warm
  (the switch off and on: a new frame, so the files are fetched again);
- **draw**: the component alone redrawing every point (no server, no fetch);
- **lasso**: a lasso round ~``--select`` points, from the mouse's release until the gallery lists them.

Usage:
    .venv/bin/python -m bench.map_bench --rows 100000 --data /tmp/map-100k
    .venv/bin/python -m bench.map_browser_bench --data /tmp/map-100k [--select 5000] [--runs 3] [--no-kept]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from picmetric_core.store.database import create_database_engine
from picmetric_core.store.orm import MapPointRow
from picmetric_ui.map_views import KEPT_DIR
from tests.support.browser import chromium, new_page, streamlit_server, wait_for_models, wait_for_run
from tests.support.services import make_settings

MAP = "iframe[title='picmetric_ui.map_component.picmetric_map']"

# Records (ms after this call) when the map's frame has painted ``want`` points. Both frames are of one origin,
# so the page reads the frame's state; times are compared as performance.timeOrigin + now() (each frame has its own).
WATCH_DRAW_JS = """
({frame, want}) => {
  const started = performance.timeOrigin + performance.now();
  window.__drawn = null;
  const look = () => {
    const map = document.querySelector(frame)?.contentWindow?.pmMap;
    if (map && map.state.paintedPoints >= want && map.state.paintedAt > started) {
      window.__drawn = map.state.paintedAt - started;
    } else {
      setTimeout(look, 5);
    }
  };
  look();
}
"""

# The map has left the page (its switch is off).
GONE_JS = "(frame) => document.querySelector(frame) === null"

# The page coordinates of a square round the map's middle holding about ``want`` points, and how many it holds.
SQUARE_JS = """
({want, left, top}) => {
  const s = pmMap.state, box = document.getElementById('overlay').getBoundingClientRect();
  const cx = s.W / 2, cy = s.H / 2, reach = new Float64Array(s.pts.count);
  for (let i = 0; i < s.pts.count; i++) {
    const p = pmMap.screenOf(i);
    reach[i] = Math.max(Math.abs(p.x - cx), Math.abs(p.y - cy));
  }
  const sorted = reach.slice().sort();
  const half = sorted[Math.min(want, sorted.length) - 1] + 0.5;
  const inside = sorted.filter(r => r <= half).length;
  const x = left + box.left + cx, y = top + box.top + cy;
  return {left: x - half, right: x + half, top: y - half, bottom: y + half, inside};
}
"""

# The sizes of the data files the frame fetched (bytes).
FETCHED_JS = """
() => performance.getEntriesByType('resource').filter(r => r.name.endsWith('.bin.gz'))
  .map(r => ({file: r.name.split('/').pop().split('-')[0], bytes: r.encodedBodySize, ms: r.duration}))
"""


def open_map(page, points: int) -> float:
    """Seconds from the click on the Map switch until ``points`` points are painted."""
    page.evaluate(WATCH_DRAW_JS, {"frame": MAP, "want": points})
    page.get_by_text("Map", exact=True).click()
    page.wait_for_function("() => window.__drawn !== null", timeout=600_000, polling=50)
    return page.evaluate("() => window.__drawn") / 1000


def map_frame(page):
    return page.locator(MAP).first.element_handle().content_frame()


def lasso(page, square: dict) -> float:
    """Seconds from the release of a lasso round ``square`` until the gallery says it lists the selection."""
    left, right, top, bottom = square["left"], square["right"], square["top"], square["bottom"]
    page.mouse.move(left, top)
    page.mouse.down()
    for x, y in ((right, top), (right, bottom), (left, bottom), (left, top + 1)):
        page.mouse.move(x, y, steps=8)
    started = page.evaluate("() => performance.now()")
    page.mouse.up()
    page.get_by_text("selected on the map").wait_for(timeout=600_000)
    wait_for_run(page, timeout_ms=600_000)
    return (page.evaluate("() => performance.now()") - started) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder bench/map_bench.py --data seeded")
    parser.add_argument("--select", type=int, default=5_000, help="about how many points the lasso takes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--after-models",
        action="store_true",
        help="open the map once the networks have loaded (their start shares the server's CPU for a minute or more)",
    )
    parser.add_argument(
        "--no-kept", action="store_true", help="remove the map reads kept on disk first: the cold open reads the map"
    )
    args = parser.parse_args()
    if args.no_kept:
        shutil.rmtree(args.data / KEPT_DIR, ignore_errors=True)
    kept = any((args.data / KEPT_DIR).glob("*.npz"))
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    print(f"CPU: {cpu} × {os.cpu_count()}; load average {_load()}")
    with (
        tempfile.TemporaryDirectory() as models,
        streamlit_server(args.data, Path(models)) as base,
        chromium() as browser,
    ):
        page = new_page(browser)
        page.set_default_timeout(600_000)
        page.goto(f"{base}/History")
        wait_for_run(page, timeout_ms=600_000)
        if args.after_models:
            wait_for_models(page, timeout_ms=600_000)
        points = mapped_photos(args.data)
        cold = open_map(page, points)
        wait_for_run(page, timeout_ms=600_000)
        found = "a read kept on disk by an earlier process" if kept else "nothing kept on disk"
        print(f"open the map, caches cold: {cold:.2f} s ({points} points; {found}; load {_load()})")
        for fetched in map_frame(page).evaluate(FETCHED_JS):
            print(f"  fetched the {fetched['file']} file: {fetched['bytes'] / 2**20:.2f} MiB in {fetched['ms']:.0f} ms")
        warm = []
        for _ in range(args.runs):
            page.get_by_text("Map", exact=True).click()  # off
            wait_for_run(page, timeout_ms=600_000)
            page.wait_for_function(GONE_JS, arg=MAP, timeout=600_000)
            warm.append(open_map(page, points))
            wait_for_run(page, timeout_ms=600_000)
        median = statistics.median(warm)
        print(f"open the map, caches warm: median {median:.2f} s (runs: {_list(warm)}; load {_load()})")
        frame = map_frame(page)
        draws = [frame.evaluate("() => pmMap.redraw()") / 1000 for _ in range(max(args.runs, 5))]
        print(f"the component's own draw of every point: median {statistics.median(draws) * 1000:.0f} ms")
        page.locator(MAP).first.scroll_into_view_if_needed()
        box = page.locator(MAP).first.bounding_box()
        square = frame.evaluate(SQUARE_JS, {"want": args.select, "left": box["x"], "top": box["y"]})
        took = lasso(page, square)
        caption = page.get_by_text("selected on the map").first.inner_text()
        inside = square["inside"]
        print(f"lasso of {inside} points until the gallery lists them: {took:.2f} s ({caption!r}; load {_load()})")
        page.context.close()


def mapped_photos(folder: Path) -> int:
    """How many photos the folder's map holds (every one is drawn: no filter is set)."""
    engine = create_database_engine(make_settings(folder))
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(MapPointRow)) or 0
    finally:
        engine.dispose()


def _load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
