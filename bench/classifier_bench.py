"""Classifier cost: EfficientNet-Lite0 vs Lite2 (the shipped stand-ins), side by side in one run.

Prints, per network, the warm milliseconds of one photo (crop + forward, median and p95) and the
milliseconds per photo in a batch. The two networks' runs are interleaved so that other load on the
machine falls on both alike.

Usage:
    .venv/bin/python bench/classifier_bench.py [--runs 20] [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import skimage.data

from picmetric_core.models.classifier import SHIPPED_CLASSIFIERS, KerasClassifier, load_classifier


def _ms(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per network (default %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="photos in each batched run (default %(default)s)")
    args = parser.parse_args()

    photo = skimage.data.chelsea()
    with tempfile.TemporaryDirectory() as no_models:
        classifiers: dict[str, KerasClassifier] = {}
        for choice in sorted(SHIPPED_CLASSIFIERS):
            start = time.perf_counter()
            clf = classifiers[choice] = load_classifier(Path(no_models), choice)
            load_ms = (time.perf_counter() - start) * 1000
            clf.classify_batch([photo] * args.batch)  # traces the batch shape before timing
            print(f"{clf.info.name}: loaded in {load_ms:.0f} ms")

    single: dict[str, list[float]] = {name: [] for name in classifiers}
    batched: dict[str, list[float]] = {name: [] for name in classifiers}
    for _ in range(args.runs):
        for name, clf in classifiers.items():
            single[name].append(_ms(lambda clf=clf: clf.classify(photo)))
            batched[name].append(_ms(lambda clf=clf: clf.classify_batch([photo] * args.batch)) / args.batch)

    print(f"\n{'classifier':<20} {'input':>6} {'1 photo median':>15} {'p95':>8} {f'batch {args.batch}, per photo':>22}")
    for name, clf in classifiers.items():
        p95 = statistics.quantiles(single[name], n=20)[-1]
        print(
            f"{clf.info.name:<20} {clf.info.input_size:>6} {statistics.median(single[name]):>12.1f} ms "
            f"{p95:>5.1f} ms {statistics.median(batched[name]):>19.1f} ms"
        )


if __name__ == "__main__":
    main()
