"""Store-step benchmark: what a new photo costs after the networks, the old way and now, side by side.

    python bench/store_bench.py                   # 768×576 and 12 MP, median of 15 runs each
    python bench/store_bench.py --runs 31 --block 8

The store step is everything after the networks and before the response: the original and the
thumbnail put, the analysis JSON put, the md5 lock and checks, the near-duplicate look-up and the rows
inserted (``PicMetricService.store_analysis``), on a local folder store and SQLite in a fresh temporary
folder. "before" is the code before issue #21, reproduced in this process: the photo decoded the old
way (a full decode of a 4000 × 3000 JPEG, then a resampling pass to 2048), its thumbnail made the old
way (Pillow's Lanczos), its rows inserted by the ORM's flush, and both PNG overlays drawn
(``render_overlays``) and put, as ``_store_objects`` did; "after" is ``store_analysis`` as it is now
(no overlay). Runs alternate before/after, each storing a new photo (the same pixels with a new md5:
bytes appended after the JPEG's end). The analysis is made up but shaped like the networks' (5
classes, 20 raw detections from score 0.1, 2 faces, a 1,280-value embedding); ``--networks`` analyses
the photos with the real ones.

It also prints the pieces (decode, thumbnail, both overlays), the first ask for an overlay now (read
and decode the original, draw, PNG, put) and a later ask (read back), and a batch block stored one
image at a time against ``store_analyses`` (its rows in one transaction).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DOG = Path("/usr/share/darknet/data/dog.jpg")  # 768 × 576, Debian's darknet package (bootstrap.sh test)
TARGETS_MS = {"768×576": 10.0, "12 MP": 150.0}


def cpu_line() -> str:
    """The CPU model, logical CPUs and matrix units, from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    amx = "AMX (bf16, int8)" if {"amx_bf16", "amx_int8"} <= flags else "no AMX"
    avx512 = "AVX-512" + (" bf16" if "avx512_bf16" in flags else "") if "avx512f" in flags else "no AVX-512"
    return f"{model}, {os.cpu_count()} logical CPUs, {amx}, {avx512}"


def jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def photos() -> dict[str, tuple[str, bytes]]:
    """The two photos: {size: (description, JPEG bytes)}."""
    from PIL import Image
    from skimage import data

    if DOG.is_file():
        small = ("darknet dog.jpg", DOG.read_bytes())
    else:
        cat = Image.fromarray(data.chelsea()[:, 25:425]).resize((768, 576), Image.Resampling.LANCZOS)
        small = ("skimage chelsea resized", jpeg(np.asarray(cat)))
    # 12 MP: skimage's chelsea cropped to 4:3 and resized to 4000 × 3000, with a fine grain so that it
    # compresses like a camera's photo rather than a smooth enlargement.
    big = np.asarray(Image.fromarray(data.chelsea()[:, 25:425]).resize((4000, 3000), Image.Resampling.LANCZOS))
    grain = np.random.default_rng(12).normal(0, 4, big.shape)
    big = np.clip(big + grain, 0, 255).astype(np.uint8)
    return {"768×576": small, "12 MP": ("skimage chelsea, 4000×3000", jpeg(big))}


def old_decode(settings, data: bytes):
    """``decode_for`` as it was before issue #21: draft to 2048 (no DCT scaling for 4000 × 3000), EXIF
    transpose (a copy), convert + asarray + copy, then a resampling pass down to 2048."""
    from PIL import Image, ImageOps

    from picmetric_core.intake import images

    image = Image.open(io.BytesIO(data), formats=["JPEG"])
    header = image.size
    image.draft("RGB", images._fitted(header, settings.analysis_max_side))
    image.load()
    images._refuse_cut_jpeg(data)
    oriented = ImageOps.exif_transpose(image)
    rgb = np.asarray(oriented.convert("RGB"), dtype=np.uint8).copy()
    if max(rgb.shape[:2]) > settings.analysis_max_side:
        rgb = images._downscaled(rgb, settings.analysis_max_side)
    return images.DecodedImage(
        data=data,
        rgb=rgb,
        md5=hashlib.md5(data).hexdigest(),
        format="JPEG",
        content_type="image/jpeg",
        original_size=header if header != (rgb.shape[1], rgb.shape[0]) else None,
    )


def old_thumbnail(rgb: np.ndarray, max_side: int = 320, *, quality: int = 85) -> bytes:
    """``thumbnail_jpeg`` as it was before issue #21 (Pillow's Lanczos)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def old_insert(session, rows) -> None:
    """The rows inserted as before issue #21: the ORM's unit of work flushes the objects."""
    session.add_all(rows)


def made_up_analysis(image):
    """An analysis shaped like the networks' for this photo, in its own pixels."""
    from picmetric_core.models.coco import COCO_CATEGORIES
    from picmetric_core.results import (
        LANDMARK_NAMES,
        Analysis,
        Box,
        Classification,
        Detection,
        Face,
        ModelInfo,
        Point,
        Signature,
    )
    from picmetric_core.similar.signature import compact_embedding

    rng = np.random.default_rng(int(image.md5[:8], 16))
    width, height = image.width, image.height

    def box() -> Box:
        w, h = rng.uniform(0.1, 0.5) * width, rng.uniform(0.1, 0.5) * height
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        return Box(float(x), float(y), float(x + w), float(y + h))

    detections = tuple(
        Detection(COCO_CATEGORIES[k].name, int(k), float(score), box())
        for k, score in zip(rng.integers(0, 80, 20), np.linspace(0.95, 0.1, 20), strict=True)
    )
    faces = []
    for score in (0.999, 0.97):
        b = box()
        points = {name: Point(b.x1 + (i + 1) * b.width / 6, b.y1 + (i + 1) * b.height / 6) for i, name in
                  enumerate(LANDMARK_NAMES)}  # fmt: skip
        faces.append(Face(score, b, points))
    return Analysis(
        image.md5,
        width,
        height,
        tuple(Classification(f"class {i}", i, 0.5 / (i + 1)) for i in range(5)),
        detections,
        tuple(faces),
        (ModelInfo("classifier", "made up", "none", False),),
        {"classifier": 40.0, "detector": 41.0, "faces": 49.0},
        signature=Signature(image.phash, compact_embedding(rng.normal(size=1280)), "made up"),
    )


def renamed(image, analysis, serial: int):
    """The same photo and analysis under a new md5 (bytes appended after the JPEG's end)."""
    data = image.data + b"\0" + serial.to_bytes(8, "big")
    md5 = hashlib.md5(data).hexdigest()
    return replace(image, data=data, md5=md5), replace(analysis, md5=md5)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


class StoreBench:
    """One service on a fresh folder and SQLite file; every store gets a new md5."""

    def __init__(self, settings, analyzer, runs: int) -> None:
        from picmetric_core.service import PicMetricService

        self.settings = settings
        self.analyzer = analyzer
        self.runs = runs
        self.service = PicMetricService(settings, analyzer)
        self._serial = 0

    def fresh(self, image, analysis):
        self._serial += 1
        return renamed(image, analysis, self._serial)

    def analysis_of(self, image):
        return self.analyzer.analyze(image) if self.analyzer else made_up_analysis(image)

    def old_store(self, pairs) -> None:
        """The store step as it was: the old thumbnail, both PNG overlays drawn and put, a transaction each."""
        from picmetric_core import service as service_module
        from picmetric_core.intake.images import thumbnail_jpeg
        from picmetric_core.overlays import render_overlays
        from picmetric_core.store.objects import ObjectKeys
        from picmetric_core.store.orm import insert_analyses

        service_module.thumbnail_jpeg = old_thumbnail
        service_module.insert_analyses = old_insert
        try:
            for image, analysis in pairs:
                keys = ObjectKeys.for_image(image.md5, image.content_type)
                overlays = render_overlays(image, analysis)
                self.service.store.put(keys.detections, overlays.detections_png, "image/png")
                self.service.store.put(keys.faces, overlays.faces_png, "image/png")
                self.service.store_analysis(image, analysis)
        finally:
            service_module.thumbnail_jpeg = thumbnail_jpeg
            service_module.insert_analyses = insert_analyses

    def each(self, call: Callable[[], object]) -> str:
        return f"{median_ms([timed(call) for _ in range(self.runs)]):.1f} ms"

    def photo(self, size: str, description: str, data: bytes) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """The store step before and after for one photo, and its pieces."""
        from picmetric_core.intake.images import decode_for, thumbnail_jpeg
        from picmetric_core.overlays import render_overlays

        settings, service = self.settings, self.service
        old_image, new_image = old_decode(settings, data), decode_for(settings, data)
        analysis = self.analysis_of(new_image)  # boxes in the photo's own pixels: the same for both decodes
        ways = {
            "before": lambda: self.old_store([self.fresh(old_image, analysis)]),
            "after": lambda: service.store_analysis(*self.fresh(new_image, analysis)),
        }
        for call in ways.values():  # warm-up: imports, the first connection
            call()
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(self.runs):
            for name in ways if run % 2 == 0 else reversed(ways):
                pair = self.fresh(old_image if name == "before" else new_image, analysis)
                if name == "before":
                    seconds[name].append(timed(lambda pair=pair: self.old_store([pair])))
                else:
                    seconds[name].append(timed(lambda pair=pair: service.store_analysis(*pair)))
        old_ms, new_ms = median_ms(seconds["before"]), median_ms(seconds["after"])
        row = (
            f"{size} JPEG ({description}, {len(data) / 1e6:.2f} MB)",
            f"{old_ms:.1f} ms",
            f"{new_ms:.1f} ms",
            f"{old_ms / new_ms:.0f}×",
            f"≤ {TARGETS_MS[size]:.0f} ms",
        )
        first_ask, later_ask = [], []
        for _ in range(self.runs):
            md5 = service.store_analysis(*self.fresh(new_image, analysis)).record.md5
            first_ask.append(timed(lambda md5=md5: service.overlay(md5, "detections")))
            later_ask.append(timed(lambda md5=md5: service.overlay(md5, "detections")))
        (old_h, old_w), (new_h, new_w) = old_image.rgb.shape[:2], new_image.rgb.shape[:2]
        pieces = [
            (size, "decode (before the networks)", self.each(lambda: old_decode(settings, data)),
             self.each(lambda: decode_for(settings, data)), f"pixels kept: {old_w}×{old_h} → {new_w}×{new_h}"),
            (size, "thumbnail", self.each(lambda: old_thumbnail(old_image.rgb)),
             self.each(lambda: thumbnail_jpeg(new_image.rgb)), "in the store step"),
            (size, "both PNG overlays drawn", self.each(lambda: render_overlays(old_image, analysis)),
             "not drawn", "in the store step before"),
            (size, "first ask for an overlay", "—", f"{median_ms(first_ask):.1f} ms",
             "read + decode the original, draw, PNG, put"),
            (size, "later asks for it", "—", f"{median_ms(later_ask):.1f} ms", "read back from the store"),
        ]  # fmt: skip
        return row, pieces

    def block(self, data: bytes, block_size: int) -> list[tuple[str, ...]]:
        """A batch block of one photo size: the old way, one store_analysis per image, store_analyses."""
        from picmetric_core.intake.images import decode_for
        from picmetric_core.service import ToStore

        old_image, new_image = old_decode(self.settings, data), decode_for(self.settings, data)
        analysis = self.analysis_of(new_image)
        ways: dict[str, Callable[[list], object]] = {
            "before: overlays drawn, a transaction per image": self.old_store,
            "now, one store_analysis per image": lambda pairs: [self.service.store_analysis(*p) for p in pairs],
            "now, store_analyses: the block's rows in one transaction": lambda pairs: self.service.store_analyses(
                [ToStore(*p) for p in pairs]
            ),
        }
        names = list(ways)
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for run in range(max(3, math.ceil(self.runs / 3))):
            for name in names if run % 2 == 0 else reversed(names):
                image = old_image if name == names[0] else new_image
                pairs = [self.fresh(image, analysis) for _ in range(block_size)]
                seconds[name].append(timed(lambda name=name, pairs=pairs: ways[name](pairs)) / block_size)
        return [
            (name, f"{statistics.median(values) * 1000:.1f} ms", f"{1 / statistics.median(values):.0f} photos/s")
            for name, values in seconds.items()
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="stores per photo and way (default 15)")
    parser.add_argument("--block", type=int, default=8, help="images in the batch block (default 8)")
    parser.add_argument("--networks", action="store_true", help="analyse the photos with the real networks")
    args = parser.parse_args()

    from picmetric_core.config import Settings

    print(f"CPU: {cpu_line()}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="store-bench-") as temp:
        settings = Settings(
            _env_file=None, data_dir=Path(temp), database_url=None, s3_bucket=None, store_dir=None,
            models_dir=Path(temp) / "models",
        )  # fmt: skip
        analyzer = None
        if args.networks:
            from picmetric_core.pipeline import get_analyzer

            analyzer = get_analyzer(settings)
        bench = StoreBench(settings, analyzer, args.runs)
        print(f"store: {bench.service.store.describe()}; database: SQLite {bench.service.engine.url.database}")
        print(f"median of {args.runs} runs each, before and after alternating; a new md5 every run\n")
        rows, pieces = [], []
        shipped = photos()
        for size, (description, data) in shipped.items():
            row, its_pieces = bench.photo(size, description, data)
            rows.append(row)
            pieces += its_pieces
        print_table(("photo", "store step before (overlays drawn)", "after", "ratio", "target"), rows)
        print()
        print_table(("photo", "piece", "before", "after", "note"), pieces)
        for size in shipped:
            print(f"\na batch block of {args.block} {size} photos (the store stage alone, per photo):")
            print_table(("way", "per photo", "store stage rate"), bench.block(shipped[size][1], args.block))
        bench.service.close()


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
