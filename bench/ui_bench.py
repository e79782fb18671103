"""Upload-to-rendered times in real Chromium for 640×480 photos, warm, with the default models.

Starts the real Streamlit server (fresh data folder; full weights only if ``--models-dir`` has them),
warms it with one upload, then prints:

- upload → first result: ``--runs`` uploads of one new photo (each a new md5, so the networks run; each in
  a fresh Streamlit session, browser cache kept, once the page is at rest), from ``set_input_files`` until
  its pictures and charts are drawn and the rerun has finished (target ≤ 1 s);
- three photos → all shown: ``--batches`` uploads of three new photos at once, until the first and until
  the last result is drawn (target ≤ 3 s for all);
- a seen-before upload.

    .venv/bin/python bench/ui_bench.py --runs 5 --batches 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.browser import (  # noqa: E402
    UPLOAD_INPUT,
    chromium,
    photo_640x480,
    streamlit_server,
    wait_for_models,
    wait_for_result,
)

TARGET_S = 1.0
BATCH_TARGET_S = 3.0
BATCH_SOURCES = ("dog.jpg", "person.jpg", "horses.jpg")


def open_page(page, base: str) -> None:
    """A fresh page load (new Streamlit session, browser cache kept, as for a returning user), left until it is
    at rest as a person would see it before dropping a photo: its run finished, no request for 500 ms."""
    page.goto(base)
    wait_for_models(page)
    page.wait_for_load_state("networkidle")


def timed_upload(page, base: str, photo: Path) -> float:
    """A fresh page load, then one upload."""
    open_page(page, base)
    started = time.perf_counter()
    page.locator(UPLOAD_INPUT).set_input_files(str(photo))
    wait_for_result(page)
    return time.perf_counter() - started


def timed_batch(page, base: str, photos: list[Path]) -> tuple[float, float]:
    """A fresh page load, then three photos at once: seconds until the first and until the last is shown."""
    open_page(page, base)
    started = time.perf_counter()
    page.locator(UPLOAD_INPUT).set_input_files([str(p) for p in photos])
    page.wait_for_function(
        "() => [...document.querySelectorAll(\".st-key-result-0 [data-testid='stImage'] img\")]"
        ".some(i => i.complete && i.naturalWidth > 0)",
        timeout=60_000,
        polling="raf",
    )
    first = time.perf_counter() - started
    wait_for_result(page, scope=f".st-key-result-{len(photos) - 1}")
    return first, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2, help="uploads of three photos at once")
    parser.add_argument("--models-dir", type=Path, help="default: an empty folder, so the offline models run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="picmetric-ui-bench-") as tmp:
        tmp_path = Path(tmp)
        models_dir = args.models_dir or tmp_path / "models"
        models_dir.mkdir(exist_ok=True)
        (tmp_path / "data").mkdir()
        started = time.perf_counter()
        with streamlit_server(tmp_path / "data", models_dir) as base, chromium() as browser:
            print(f"server healthy in {time.perf_counter() - started:.1f} s")
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
            warm = timed_upload(page, base, photo_640x480(tmp_path / "warm.jpg", tint=1))
            print(f"first upload (warm-up in progress or just done): {warm:.2f} s")
            times = [
                timed_upload(page, base, photo_640x480(tmp_path / f"run{i}.jpg", tint=10 + i)) for i in range(args.runs)
            ]
            batches = [
                timed_batch(
                    page,
                    base,
                    [
                        photo_640x480(tmp_path / f"b{b}-{i}.jpg", src, tint=100 + 3 * b + i)
                        for i, src in enumerate(BATCH_SOURCES)
                    ],
                )
                for b in range(args.batches)
            ]
            seen = timed_upload(page, base, tmp_path / "run0.jpg")
    print(
        f"upload → first result, 640×480, warm, {args.runs} runs: "
        f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
        f"(target ≤ {TARGET_S} s: {'met' if statistics.median(times) <= TARGET_S else 'NOT met'})"
    )
    if batches:
        firsts, alls = [b[0] for b in batches], [b[1] for b in batches]
        print(
            f"three photos → first shown: median {statistics.median(firsts):.2f} s; all shown: median "
            f"{statistics.median(alls):.2f} s, max {max(alls):.2f} s ({args.batches} batches; target ≤ "
            f"{BATCH_TARGET_S} s: {'met' if statistics.median(alls) <= BATCH_TARGET_S else 'NOT met'})"
        )
    print(f"seen-before upload → stored result rendered: {seen:.2f} s")


if __name__ == "__main__":
    main()
