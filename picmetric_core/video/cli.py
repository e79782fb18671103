"""``picmetric analyze clip.mp4``: a video file (recognised by its container, not its name) analysed and kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from picmetric_core.config import Settings
from picmetric_core.video.results import StoredVideo


def analyze_video_file(path: Path, settings: Settings) -> tuple[dict[str, Any], str]:
    """Analyse and store the clip at ``path``; its JSON document (input first) and a summary for the terminal.

    Raises:
        PicMetricError: the clip was refused (with the reason), or the store or database is down.
    """
    from picmetric_core.native_logs import native_stderr_to_log
    from picmetric_core.runtime import shared_runtime

    videos = shared_runtime(settings).videos()
    with native_stderr_to_log():  # TensorFlow's start-up lines are not for the terminal
        stored = videos.analyze_file(path, path.name)
        stored = videos.get(stored.video_id) or stored
    return {"input": str(path), **videos.document(stored)}, summary(str(path), stored)


def summary(source: str, stored: StoredVideo) -> str:
    """Two or three lines: the clip, its tracks by class, and the counting line's counts."""
    info = stored.analysis.info
    objects = ", ".join(f"{label} {count}" for label, count in stored.top_objects) or "none"
    lines = [
        f"{source}  video_id={stored.video_id}  {info.width}x{info.height} {info.codec} {info.duration_s:.1f} s  "
        f"analysed in {stored.analysis.seconds:.1f} s",
        f"  tracks:  {objects}",
    ]
    if stored.analysis.counts:
        lines.append(
            "  line:    " + ", ".join(f"{c.label} in {c.inward} out {c.outward}" for c in stored.analysis.counts)
        )
    return "\n".join(lines)
