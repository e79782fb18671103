"""How long does History → Map take in Chromium with many photos: drawing it, and a lasso narrowing the gallery?

Runs the real Streamlit server (127.0.0.1 only) on a folder ``bench/map_bench.py --data DIR`` seeded and
fitted, and headless Chromium (software WebGL: no GPU here), and times:

- **open**: from the click on the Map switch until every point is on the canvas (the server's read of the
  map, the figure, its transfer, plotly's draw); first with the page's caches cold, then warm;
- **draw**: plotly alone redrawing the same figure in the page (``Plotly.newPlot``), no server;
- **lasso**: a lasso round ~``--select`` points, from the mouse's release until the gallery lists them.

Usage:
    .venv/bin/python -m bench.map_bench --rows 100000 --data /tmp/map-100k
    .venv/bin/python -m bench.map_browser_bench --data /tmp/map-100k [--select 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from sqlalchemy import func, select

from picmetric_core.store.database import create_database_engine
from picmetric_core.store.orm import MapPointRow
from tests.support.browser import chromium, new_page, streamlit_server, wait_for_run
from tests.support.services import make_settings

PLOT = "[data-testid='stPlotlyChart'] .js-plotly-plot"

# Records (ms after this call) when the map first holds ``want`` points, and two frames later (painted).
WATCH_DRAW_JS = """
({plot, want}) => {
  const started = performance.now();
  window.__drawn = null;
  const count = () => [...document.querySelectorAll(plot)]
    .map(p => (p._fullData || []).filter(t => t.type === 'scattergl').reduce((n, t) => n + t.x.length, 0))
    .reduce((a, b) => Math.max(a, b), 0);
  const look = () => {
    if (count() >= want) {
      requestAnimationFrame(() => requestAnimationFrame(() => { window.__drawn = performance.now() - started; }));
    } else {
      requestAnimationFrame(look);
    }
  };
  requestAnimationFrame(look);
}
"""

# The map has left the page (its switch is off): no WebGL scatter anywhere.
GONE_JS = (
    "(plot) => ![...document.querySelectorAll(plot)].some(p => (p._fullData || []).some(t => t.type === 'scattergl'))"
)

# Plotly alone: the same figure drawn again into a new element, timed until painted.
REDRAW_JS = """
async ({plot}) => {
  if (typeof Plotly === 'undefined') return null;  // not every Streamlit build exposes it
  const gd = [...document.querySelectorAll(plot)].find(p => (p._fullData || []).some(t => t.type === 'scattergl'));
  const div = document.createElement('div');
  div.style.width = gd.clientWidth + 'px';
  document.body.appendChild(div);
  const started = performance.now();
  await Plotly.newPlot(div, gd.data, gd.layout);
  await new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  const took = performance.now() - started;
  Plotly.purge(div); div.remove();
  return took;
}
"""

# The page coordinates of a square round the map's middle holding about ``want`` points, and how many it holds.
SQUARE_JS = """
({plot, want}) => {
  const gd = [...document.querySelectorAll(plot)].find(p => (p._fullData || []).some(t => t.type === 'scattergl'));
  const box = gd.getBoundingClientRect();
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
  const px = [], py = [];
  gd._fullData.forEach(t => t.x.forEach((x, i) => {
    px.push(box.left + xa._offset + xa.l2p(x)); py.push(box.top + ya._offset + ya.l2p(t.y[i]));
  }));
  const cx = box.left + xa._offset + xa._length / 2, cy = box.top + ya._offset + ya._length / 2;
  const reach = px.map((x, i) => Math.max(Math.abs(x - cx), Math.abs(py[i] - cy))).sort((a, b) => a - b);
  const half = reach[Math.min(want, reach.length) - 1] + 0.5;
  const inside = reach.filter(r => r <= half).length;
  return {left: cx - half, right: cx + half, top: cy - half, bottom: cy + half, inside};
}
"""


def open_map(page, points: int) -> float:
    """Seconds from the click on the Map switch until ``points`` points are painted."""
    page.evaluate(WATCH_DRAW_JS, {"plot": PLOT, "want": points})
    page.get_by_text("Map", exact=True).click()
    page.wait_for_function("() => window.__drawn !== null", timeout=600_000, polling=100)
    return page.evaluate("() => window.__drawn") / 1000


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
    args = parser.parse_args()
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    print(f"CPU: {cpu} × {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    with (
        tempfile.TemporaryDirectory() as models,
        streamlit_server(args.data, Path(models)) as base,
        chromium() as browser,
    ):
        page = new_page(browser)
        page.set_default_timeout(600_000)
        page.goto(f"{base}/History")
        wait_for_run(page, timeout_ms=600_000)
        points = mapped_photos(args.data)
        cold = open_map(page, points)
        wait_for_run(page, timeout_ms=600_000)
        print(f"open the map, caches cold: {cold:.2f} s ({points} points)")
        warm = []
        for _ in range(args.runs):
            page.get_by_text("Map", exact=True).click()  # off
            wait_for_run(page, timeout_ms=600_000)
            page.wait_for_function(GONE_JS, arg=PLOT, timeout=600_000)
            warm.append(open_map(page, points))
            wait_for_run(page, timeout_ms=600_000)
        print(f"open the map, caches warm: median {statistics.median(warm):.2f} s (runs: {_list(warm)})")
        redraws = [page.evaluate(REDRAW_JS, {"plot": PLOT}) for _ in range(args.runs)]
        if None not in redraws:
            seconds = [ms / 1000 for ms in redraws]
            print(f"plotly's own draw of the figure: median {statistics.median(seconds):.2f} s ({_list(seconds)})")
        square = page.evaluate(SQUARE_JS, {"plot": PLOT, "want": args.select})
        took = lasso(page, square)
        caption = page.get_by_text("selected on the map").first.inner_text()
        print(f"lasso of {square['inside']} points until the gallery lists them: {took:.2f} s ({caption!r})")
        page.context.close()


def mapped_photos(folder: Path) -> int:
    """How many photos the folder's map holds (every one is drawn: no filter is set)."""
    engine = create_database_engine(make_settings(folder))
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(MapPointRow)) or 0
    finally:
        engine.dispose()


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
