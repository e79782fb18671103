"""Video analysis on this CPU: a generated 720p30 H.264 clip analysed at 5 sampled frames/s (detector + faces
batched, the classifier once a second, ByteTrack, a counting line) and re-encoded as the annotated clip.

Each clip length runs in a fresh process, so its peak RSS is its own; the clips are made from the darknet and
scikit-image photos (a horse, a dog and a face crossing the picture, then again the other way).

    .venv/bin/python bench/video_bench.py [--seconds 10 60] [--sample-fps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WIDTH, HEIGHT, FPS = 1280, 720, 30


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def make_bench_clip(path: Path, seconds: float) -> None:
    """``seconds`` of 720p30 H.264 with sound: sprites crossing back and forth, one pass every 10 s."""
    from fractions import Fraction

    import av

    from tests.support.videos import Sprite, _tone, dog_patch, face_patch, frame_at, horse_patch

    sprites = [
        Sprite(horse_patch(1.5), (-340, 80), (1280, 120)),
        Sprite(dog_patch(1.5), (1280, 420), (-230, 400)),
        Sprite(face_patch(1.2), (200, 720), (900, -220)),
    ]
    period = 10 * FPS
    with av.open(str(path), mode="w", format="mp4") as output:
        video = output.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        sound = output.add_stream("aac", rate=48_000)
        sound.layout = "mono"
        for number in range(round(seconds * FPS)):
            phase = (number % period) / (period - 1)
            progress = phase if (number // period) % 2 == 0 else 1 - phase
            frame = av.VideoFrame.from_ndarray(frame_at(sprites, progress, WIDTH, HEIGHT), format="rgb24")
            frame.pts, frame.time_base = number, Fraction(1, FPS)
            for packet in video.encode(frame):
                output.mux(packet)
        for packet in video.encode():
            output.mux(packet)
        _tone(output, sound, seconds)


def one(seconds: float, sample_fps: float) -> dict:
    from picmetric_core.config import Settings
    from picmetric_core.pipeline import get_analyzer
    from picmetric_core.results import Point
    from picmetric_core.video.analysis import ClipOptions, analyze_clip
    from picmetric_core.video.probe import VideoLimits
    from picmetric_core.video.results import CountingLine

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "bench.mp4"
        started = time.perf_counter()
        make_bench_clip(clip, seconds)
        made_s = time.perf_counter() - started
        settings = Settings(_env_file=None, models_dir=Path(folder) / "models")
        analyzer = get_analyzer(settings)
        rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        line = CountingLine(Point(WIDTH / 2, 0), Point(WIDTH / 2, HEIGHT))
        options = ClipOptions(sample_fps=sample_fps, line=line)
        result = analyze_clip(
            clip, analyzer, VideoLimits.from_settings(settings), options, annotated=Path(folder) / "a.mp4"
        )
        annotated_mb = (Path(folder) / "a.mp4").stat().st_size / 1e6
    analysis = result.analysis
    return {
        "seconds": seconds,
        "clip_made_s": round(made_s, 1),
        "wall_s": analysis.seconds,
        "x_real_time": round(seconds / analysis.seconds, 2),
        "stages_s": result.stage_seconds,
        "sampled_frames": len(analysis.frames),
        "tracks": len(analysis.tracks),
        "counts": [(c.label, c.inward, c.outward) for c in analysis.counts],
        "annotated_mb": round(annotated_mb, 1),
        "peak_rss_mb_models_loaded": round(rss_loaded),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "models": [m.name for m in analysis.models],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 60])
    parser.add_argument("--sample-fps", type=float, default=5.0)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.sample_fps)))
        return
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average before: {os.getloadavg()}")
    print("(the cores are shared with other work; a busy machine reads slower)")
    for seconds in args.seconds:
        run = subprocess.run(
            [sys.executable, __file__, "--one", str(seconds), "--sample-fps", str(args.sample_fps)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(json.dumps(json.loads(run.stdout.strip().splitlines()[-1]), indent=1))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
