"""What a small file that decodes to a huge image costs: decode, networks and overlays, per size.

Each size runs in a fresh process, so its peak RSS is its own. The image is a photo (darknet's
dog.jpg) scaled up and saved as a PNG, the shape a hostile upload takes.

    python bench/huge_images.py --sides 1000 3000 7000 --max-side 2048
    python bench/huge_images.py --sides 1000 3000 --max-side 0     # 0: the old behaviour, no downscaling
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


def measure(side: int, max_side: int) -> dict[str, float]:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from PIL import Image

    from picmetric_core.config import Settings
    from picmetric_core.intake.images import decode_image
    from picmetric_core.overlays import render_overlays
    from picmetric_core.pipeline import get_analyzer

    analyzer = get_analyzer(Settings())
    analyzer.analyze(decode_image(DOG.read_bytes(), max_bytes=1 << 30, max_pixels=10**9))  # warm up
    buffer = io.BytesIO()
    Image.open(DOG).resize((side, side * 3 // 4)).save(buffer, "PNG")
    data = buffer.getvalue()
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
        "megapixels": round(side * side * 3 / 4 / 1e6, 1),
        "file_kb": round(len(data) / 1024),
        "decode_s": round(decoded - started, 2),
        "networks_s": round(analysed - decoded, 2),
        "overlays_s": round(drawn - analysed, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_mb": round(rss_before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[1000, 3000])
    parser.add_argument("--max-side", type=int, default=2048, help="0 keeps every pixel (the old behaviour)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.max_side)))
        return
    print("side  MP    file KB  decode s  networks s  overlays s  peak RSS MB (before)")
    for side in args.sides:
        command = [sys.executable, __file__, "--one", str(side), "--max-side", str(args.max_side)]
        row = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(
            f"{row['side']:5d} {row['megapixels']:5.1f} {row['file_kb']:8d} {row['decode_s']:9.2f} "
            f"{row['networks_s']:11.2f} {row['overlays_s']:11.2f} {row['peak_rss_mb']:8d} ({row['rss_before_mb']})"
        )


if __name__ == "__main__":
    main()
