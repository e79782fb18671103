"""``picmetric map fit``: fit the History map to every stored embedding (resumable, with a progress bar)."""

from __future__ import annotations

import argparse

from picmetric_core.config import Settings

STAGES = {
    "neighbours": "reduced space, nearest neighbours",
    "layout": "layout and clusters",
    "points": "writing points",
}


def add_map_parser(commands: argparse._SubParsersAction) -> None:
    """The ``map`` command and its ``fit`` action, for the main parser."""
    parser = commands.add_parser("map", help="fit the History map of every stored photo")
    parser.add_argument("action", choices=["fit"])


def map_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``picmetric map fit``; an interrupted fit carries on from its last finished stage when run again."""
    from tqdm import tqdm

    from picmetric_core.runtime import shared_runtime

    runtime = shared_runtime(settings)
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=STAGES[stage], unit="photo" if stage != "layout" else "step")
        bar.update(done - bar.n)

    try:
        report = runtime.service().fit_map(on_progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
        runtime.close()
    if report is None:
        print("no stored photo has an embedding yet: nothing to map (run `picmetric similar backfill` for old ones)")
        return 1
    resumed = f", resumed after its {report.resumed} stage" if report.resumed else ""
    print(
        f"done: the map of {report.classifier} places {report.photos} photos ({report.method}), "
        f"{report.clusters} clusters{resumed}"
    )
    return 0
