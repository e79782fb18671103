"""The ``picmetric`` command: analyse files or URLs, and manage weights."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from picmetric_core.config import Settings, get_settings
from picmetric_core.errors import PicMetricError
from picmetric_core.filters import shown
from picmetric_core.intake.images import DecodedImage, decode_for
from picmetric_core.models import weights
from picmetric_core.results import Analysis
from picmetric_core.similar.cli import add_similar_parser, similar_command


@dataclass(frozen=True)
class InputResult:
    source: str
    analysis: Analysis | None = None
    error: str | None = None


def is_url(text: str) -> bool:
    return "://" in text


def read_input(source: str, settings: Settings) -> DecodedImage:
    """Bytes of a file or URL, decoded; raises :class:`PicMetricError` with a user-readable message."""
    if is_url(source):
        from picmetric_core.intake.fetch import fetch_url

        return decode_for(settings, fetch_url(source, settings).data)
    path = Path(source)
    if not path.is_file():
        raise PicMetricError(f"no such file: {source}")
    return decode_for(settings, path.read_bytes())


def summary_line(source: str, analysis: Analysis) -> str:
    visible = shown(analysis)
    top = ", ".join(f"{c.label} {c.score:.0%}" for c in analysis.classifications[:3])
    objects = ", ".join(f"{d.label} {d.score:.0%}" for d in visible.detections) or "none"
    return (
        f"{source}  md5={analysis.md5}  {analysis.width}x{analysis.height}  "
        f"{analysis.timings_ms.get('total', 0):.0f} ms\n"
        f"  classes: {top}\n  objects: {objects}\n  faces:   {len(visible.faces)}"
    )


def write_outputs(out_dir: Path, source: str, image: DecodedImage, analysis: Analysis) -> None:
    from picmetric_core.overlays import render_overlays
    from picmetric_core.views import full_view, to_json

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(source.rstrip('/')).stem or 'image'}_{analysis.md5[:8]}"
    overlays = render_overlays(image, analysis)
    (out_dir / f"{stem}_detections.png").write_bytes(overlays.detections_png)
    (out_dir / f"{stem}_faces.png").write_bytes(overlays.faces_png)
    (out_dir / f"{stem}.json").write_text(to_json(full_view(analysis), indent=2))


def analyze_command(args: argparse.Namespace, settings: Settings) -> int:
    from picmetric_core.native_logs import native_stderr_to_log
    from picmetric_core.service import analyze_unstored

    results: list[InputResult] = []
    for source in args.inputs:
        try:
            image = read_input(source, settings)
            with native_stderr_to_log():  # TensorFlow's start-up lines are not for the terminal
                analysis = analyze_unstored(settings, image)
            if args.out:
                write_outputs(Path(args.out), source, image, analysis)
            results.append(InputResult(source, analysis=analysis))
            if not args.json:
                print(summary_line(source, analysis))
        except PicMetricError as exc:
            results.append(InputResult(source, error=str(exc)))
            print(f"picmetric: {source}: {exc}", file=sys.stderr)
    if args.json:
        from picmetric_core.views import cli_document, to_json

        print(to_json([cli_document(r.source, r.analysis, r.error) for r in results], indent=2))
    return 1 if any(r.error for r in results) else 0


def weights_status_command(settings: Settings) -> int:
    models_dir = settings.resolved_models_dir
    print(f"models folder: {models_dir}")
    for row in weights.status(models_dir):
        where = f"{row.path}  {row.size:,} B  sha256 {row.sha256}" if row.path else "not found"
        print(f"  {row.spec.key:<20} {where}")
    stand_in = f"EfficientNet-{settings.classifier.title()} (offline stand-in)"  # lite2 -> EfficientNet-Lite2
    classifier = "ResNet50" if weights.locate(weights.RESNET50, models_dir) else stand_in
    detector = "YOLOv3-416" if weights.locate(weights.YOLOV3, models_dir) else "YOLOv3-tiny (offline stand-in)"
    print(f"will run: classifier {classifier}; detector {detector}; faces MTCNN")
    return 0


def weights_fetch_command(settings: Settings) -> int:
    from tqdm import tqdm

    models_dir = settings.resolved_models_dir
    failures = 0
    for spec in weights.FETCHABLE:
        bar = tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.key, leave=True)

        def progress(done: int, total: int | None, bar=bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            path = weights.fetch(spec, models_dir, progress=progress)
            bar.close()
            print(f"{spec.key}: ok, {path}")
        except PicMetricError as exc:
            bar.close()
            failures += 1
            print(f"{spec.key}: not fetched ({exc})")
    if failures:
        print(
            "Full weights could not be fetched (no internet?). PicMetric runs on the registry-shipped "
            "weights instead; `picmetric weights status` shows which."
        )
    return 0


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """``picmetric export``: the History filters as flags, the thresholds, the format and the file."""
    from picmetric_core.exports import EXPORT_FORMATS
    from picmetric_core.filters import DEFAULT_THRESHOLDS

    export = commands.add_parser("export", help="export stored analyses as CSV, COCO JSON or a ZIP of images")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    export.add_argument("--out", metavar="FILE", required=True, help="where to write the export")
    export.add_argument("--label", help="an ImageNet or COCO label")
    export.add_argument("--label-kind", choices=["classifier", "detector"])
    export.add_argument("--min-score", type=float, default=DEFAULT_THRESHOLDS.min_detection_score)
    faces = export.add_mutually_exclusive_group()
    faces.add_argument("--has-faces", action="store_const", const=True, dest="has_faces")
    faces.add_argument("--no-faces", action="store_const", const=False, dest="has_faces")
    export.add_argument("--min-faces", type=int)
    export.add_argument("--max-faces", type=int)
    export.add_argument("--since", type=iso_datetime, help="ISO 8601, e.g. 2026-12-01T00:00:00+00:00")
    export.add_argument("--until", type=iso_datetime, help="ISO 8601, e.g. 2026-12-03T00:00:00+00:00")
    export.add_argument("--filename", help="part of the file name")
    export.add_argument("--md5", help="an md5 or its start")
    export.add_argument("--min-detection-score", type=float, default=DEFAULT_THRESHOLDS.min_detection_score)
    export.add_argument("--nms-iou", type=float, default=DEFAULT_THRESHOLDS.nms_iou)
    export.add_argument("--min-face-score", type=float, default=DEFAULT_THRESHOLDS.min_face_score)


def iso_datetime(text: str) -> datetime:
    """An ISO 8601 moment; one without a timezone is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    from picmetric_core import exports
    from picmetric_core.filters import DisplayThresholds
    from picmetric_core.lifecycle import ModelLoader
    from picmetric_core.service import PicMetricService
    from picmetric_core.store.history import HistoryQuery

    try:
        thresholds = DisplayThresholds(args.min_detection_score, args.nms_iou, args.min_face_score)
        query = HistoryQuery(
            label=args.label,
            label_kind=args.label_kind,
            min_score=args.min_score,
            has_faces=args.has_faces,
            min_faces=args.min_faces,
            max_faces=args.max_faces,
            min_face_score=args.min_face_score,
            since=args.since,
            until=args.until,
            filename=args.filename,
            md5=args.md5.lower() if args.md5 else None,
        )
    except ValueError as error:
        print(f"picmetric export: {error}", file=sys.stderr)
        return 2
    try:
        # The loader never starts: an export reads stored results and runs no network.
        service = PicMetricService(settings, ModelLoader(settings))
    except PicMetricError as error:
        print(f"picmetric export: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    try:
        with out.open("wb") as target:
            exports.write_export(service, query, args.format, target, thresholds)
    except PicMetricError as error:
        out.unlink(missing_ok=True)
        print(f"picmetric export: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"picmetric export: could not write {out}: {error.strerror}", file=sys.stderr)
        return 1
    finally:
        service.close()
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {args.format})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="picmetric", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="analyse image files or URLs")
    analyze.add_argument("inputs", nargs="+", metavar="FILE_OR_URL")
    analyze.add_argument("--json", action="store_true", help="print full results as JSON")
    analyze.add_argument("--out", metavar="DIR", help="write overlays and JSON into DIR")
    weights_parser = commands.add_parser("weights", help="show or fetch model weights")
    weights_parser.add_argument("action", choices=["status", "fetch"])
    add_export_parser(commands)
    add_similar_parser(commands)
    from picmetric_core.batch.cli import register as register_batch

    register_batch(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if hasattr(args, "handler"):
        return args.handler(args, settings)
    if args.command == "analyze":
        return analyze_command(args, settings)
    if args.command == "export":
        return export_command(args, settings)
    if args.command == "similar":
        return similar_command(args, settings)
    if args.action == "status":
        return weights_status_command(settings)
    return weights_fetch_command(settings)


if __name__ == "__main__":
    sys.exit(main())
