"""What a small file that decodes to a huge image costs: decode, networks and overlays, per size.

Each size runs in a fresh process, so its peak RSS is its own. The image is a photo (darknet's
dog.jpg) scaled up (side × ¾ side) and saved as a PNG, or, with ``--kind flat-png`` / ``flat-jpeg``, a
flat square (a one-bit PNG, a grey JPEG): a small file that decodes to side × side pixels, the hostile
upload of issue #11.

    python bench/huge_images.py --sides 1000 3000 7000 --max-side 2048
    python bench/huge_images.py --sides 1000 3000 --max-side 0     # 0: the old behaviour, no downscaling
    python bench/huge_images.py --sides 7000 --kind flat-png flat-jpeg --max-side 2048 0
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DOG = Path("/usr/share/darknet/data/dog.jpg")


def hostile_file(side: int, kind: str) -> tuple[bytes, int]:
    """The file's bytes and its height."""
    from PIL import Image

    buffer = io.BytesIO()
    if kind == "photo":
        Image.open(DOG).resize((side, side * 3 // 4)).save(buffer, "PNG")
        return buffer.getvalue(), side * 3 // 4
    if kind == "flat-png":  # one bit a pixel: 7000 × 7000 is a 6 KB file
        Image.new("1", (side, side), 1).save(buffer, "PNG", optimize=True)
    else:
        Image.new("L", (side, side), 128).save(buffer, "JPEG", quality=10)
    return buffer.getvalue(), side


def measure(side: int, max_side: int, kind: str) -> dict[str, float]:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from picmetric_core.config import Settings
    from picmetric_core.intake.images import decode_image
    from picmetric_core.overlays import render_overlays
    from picmetric_core.pipeline import get_analyzer

    analyzer = get_analyzer(Settings())
    analyzer.analyze(decode_image(DOG.read_bytes(), max_bytes=1 << 30, max_pixels=10**9))  # warm up
    data, height = hostile_file(side, kind)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    image = decode_image(data, max_bytes=1 << 30, max_pixels=10**9, max_side=max_side or None)
    decoded = time.perf_counter()
    analysis = analyzer.analyze(image)
    analysed = time.perf_counter()
    render_overlays(image, analysis)
    drawn = time.perf_counter()
    return {
        "side": side,
        "kind": kind,
        "megapixels": round(side * height / 1e6, 1),
        "file_kb": round(len(data) / 1024, 1),
        "decode_s": round(decoded - started, 2),
        "networks_s": round(analysed - decoded, 2),
        "overlays_s": round(drawn - analysed, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_mb": round(rss_before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--kind", nargs="+", choices=["photo", "flat-png", "flat-jpeg"], default=["photo"])
    parser.add_argument(
        "--max-side", type=int, nargs="+", default=[2048], help="0 keeps every pixel (the old behaviour)"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.max_side[0], args.kind[0])))
        return
    print("kind       max side  side  MP     file KB  decode s  networks s  overlays s  peak RSS MB (before)")
    for kind in args.kind:
        for max_side in args.max_side:
            for side in args.sides:
                command = [sys.executable, __file__, "--one", str(side), "--max-side", str(max_side), "--kind", kind]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                row = json.loads(done.stdout.splitlines()[-1])
                print(
                    f"{kind:10s} {max_side or 'none':>8} {side:5d} {row['megapixels']:5.1f} {row['file_kb']:9.1f} "
                    f"{row['decode_s']:9.2f} {row['networks_s']:11.2f} {row['overlays_s']:11.2f} "
                    f"{row['peak_rss_mb']:8d} ({row['rss_before_mb']})"
                )


if __name__ == "__main__":
    main()
