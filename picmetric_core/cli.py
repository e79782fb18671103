"""The ``picmetric`` command: analyse files or URLs, and manage weights."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from picmetric_core.config import Settings, get_settings
from picmetric_core.errors import PicMetricError
from picmetric_core.filters import shown
from picmetric_core.intake import Incoming, Upload, intake, is_url
from picmetric_core.intake.fetch import FetchSlots
from picmetric_core.intake.images import DecodedImage
from picmetric_core.map.cli import add_map_parser, map_command
from picmetric_core.models import weights
from picmetric_core.results import Analysis
from picmetric_core.similar.cli import add_similar_parser, similar_command


@dataclass(frozen=True)
class InputResult:
    source: str
    analysis: Analysis | None = None
    error: str | None = None
    document: dict[str, Any] | None = None  # a video's (see picmetric_core.video.cli)


def read_input(source: str, settings: Settings, fetch_slots: FetchSlots | None = None) -> Incoming:
    """A file or an http(s) URL (:func:`is_url`), read and decoded by :func:`intake`.

    Raises:
        PicMetricError: a user-readable message (no such file, a refused URL, not an image, ...).
    """
    if is_url(source):
        return intake(source, settings, fetch_slots=fetch_slots)
    path = Path(source)
    if not path.is_file():
        raise PicMetricError(f"no such file: {source}")
    return intake(Upload(path.read_bytes(), source), settings)


def summary_line(source: str, analysis: Analysis) -> str:
    visible = shown(analysis)
    top = ", ".join(f"{c.label} {c.score:.0%}" for c in analysis.classifications[:3])
    objects = ", ".join(f"{d.label} {d.score:.0%}" for d in visible.detections) or "none"
    return (
        f"{source}  md5={analysis.md5}  {analysis.width}x{analysis.height}  "
        f"{analysis.timings_ms.get('total', 0):.0f} ms\n"
        f"  classes: {top}\n  objects: {objects}\n  faces:   {len(visible.faces)}"
    )


def write_outputs(out_dir: Path, filename: str | None, image: DecodedImage, analysis: Analysis) -> None:
    """The overlays and the JSON, named after the input's file name (the intake's) and the md5."""
    from picmetric_core.overlays import render_overlays
    from picmetric_core.views import full_view, to_json

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(filename or 'image').stem or 'image'}_{analysis.md5[:8]}"
    overlays = render_overlays(image, analysis)
    (out_dir / f"{stem}_detections.png").write_bytes(overlays.detections_png)
    (out_dir / f"{stem}_faces.png").write_bytes(overlays.faces_png)
    (out_dir / f"{stem}.json").write_text(to_json(full_view(analysis), indent=2))


def analyze_command(args: argparse.Namespace, settings: Settings) -> int:
    from picmetric_core.native_logs import native_stderr_to_log
    from picmetric_core.runtime import shared_runtime
    from picmetric_core.service import analyze_unstored
    from picmetric_core.video.cli import analyze_video_file
    from picmetric_core.video.probe import is_video

    fetch_slots = shared_runtime(settings).fetch_slots
    results: list[InputResult] = []
    for source in args.inputs:
        try:
            if not is_url(source) and is_video(Path(source)):
                document, summary = analyze_video_file(Path(source), settings)
                results.append(InputResult(source, document=document))
                if not args.json:
                    print(summary)
                continue
            incoming = read_input(source, settings, fetch_slots)
            with native_stderr_to_log():  # TensorFlow's start-up lines are not for the terminal
                analysis = analyze_unstored(settings, incoming.image)
            if args.out:
                write_outputs(Path(args.out), incoming.filename, incoming.image, analysis)
            results.append(InputResult(source, analysis=analysis))
            if not args.json:
                print(summary_line(source, analysis))
        except PicMetricError as exc:
            results.append(InputResult(source, error=str(exc)))
            print(f"picmetric: {source}: {exc}", file=sys.stderr)
    if args.json:
        from picmetric_core.views import cli_document, to_json

        documents = [r.document or cli_document(r.source, r.analysis, r.error) for r in results]
        print(to_json(documents, indent=2))
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


M = TypeVar("M", bound=BaseModel)
NEGATIVE_FLAGS = {"has_faces": "--no-faces"}
"""The "no" flag of a yes/no field where it reads better than ``--no-<field>``."""


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """``picmetric export``: the History filters and the format as flags, the thresholds and the file."""
    from picmetric_core.exports import ExportFilters
    from picmetric_core.filters import DEFAULT_THRESHOLDS

    export = commands.add_parser("export", help="export stored analyses as CSV, COCO JSON or a ZIP of images")
    export.add_argument("--out", metavar="FILE", required=True, help="where to write the export")
    add_model_flags(export, ExportFilters)
    export.add_argument("--min-detection-score", type=float, default=DEFAULT_THRESHOLDS.min_detection_score)
    export.add_argument("--nms-iou", type=float, default=DEFAULT_THRESHOLDS.nms_iou)
    export.add_argument("--min-face-score", type=float, default=DEFAULT_THRESHOLDS.min_face_score)


def iso_datetime(text: str) -> datetime:
    """An ISO 8601 moment; one without a timezone is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """A flag for each field of ``model`` (``--label-kind`` for ``label_kind``), with its description as help.

    Flags default to ``None`` (the field's own default); :func:`model_from_flags` builds the model, which
    checks the values, so no bound is written twice.
    """
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _flag_type(field.annotation)
        if kind is bool:
            yes_or_no = parser.add_mutually_exclusive_group()
            for option, value in ((flag, True), (NEGATIVE_FLAGS.get(name, f"--no-{flag[2:]}"), False)):
                answer = "yes" if value else "no"
                yes_or_no.add_argument(
                    option, action="store_const", const=value, dest=name, help=f"{field.description}: {answer}"
                )
        elif get_origin(kind) is Literal:
            parser.add_argument(flag, choices=get_args(kind), dest=name, help=field.description)
        else:
            kind = iso_datetime if kind is datetime else kind
            parser.add_argument(flag, type=kind, dest=name, help=field.description)


def model_from_flags(model: type[M], args: argparse.Namespace) -> M:
    """``model`` from the flags :func:`add_model_flags` made; ``ValidationError`` for a value out of bounds."""
    return model(**{name: value for name in model.model_fields if (value := getattr(args, name)) is not None})


def flag_problems(error: ValidationError) -> str:
    """What is wrong with the flags, one clause a flag: ``--min-faces: Input should be ...``."""
    return "; ".join(
        f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}" if problem["loc"] else problem["msg"]
        for problem in error.errors()
    )


def _flag_type(annotation: Any) -> Any:
    """What a flag parses: ``X`` of ``X | None`` and of ``Annotated[X, ...]``."""
    if get_origin(annotation) in (Union, UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    from picmetric_core import exports
    from picmetric_core.filters import DisplayThresholds
    from picmetric_core.runtime import shared_runtime

    try:
        thresholds = DisplayThresholds(args.min_detection_score, args.nms_iou, args.min_face_score)
        filters = model_from_flags(exports.ExportFilters, args)
        query = filters.query(min_face_score=args.min_face_score, sort=filters.sort)
    except ValidationError as error:
        print(f"picmetric export: {flag_problems(error)}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"picmetric export: {error}", file=sys.stderr)
        return 2
    runtime = shared_runtime(settings)  # its loader never starts: an export runs no network
    try:
        service = runtime.service()
    except PicMetricError as error:
        print(f"picmetric export: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    try:
        with out.open("wb") as target:
            exports.write_export(service, query, filters.format, target, thresholds)
    except PicMetricError as error:
        out.unlink(missing_ok=True)
        print(f"picmetric export: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"picmetric export: could not write {out}: {error.strerror}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {filters.format})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="picmetric", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    analyze = commands.add_parser("analyze", help="analyse image files or URLs, and video files (stored)")
    analyze.add_argument("inputs", nargs="+", metavar="FILE_OR_URL")
    analyze.add_argument("--json", action="store_true", help="print full results as JSON")
    analyze.add_argument("--out", metavar="DIR", help="write overlays and JSON into DIR")
    weights_parser = commands.add_parser("weights", help="show or fetch model weights")
    weights_parser.add_argument("action", choices=["status", "fetch"])
    add_export_parser(commands)
    add_similar_parser(commands)
    add_map_parser(commands)
    from picmetric_core.batch.cli import register as register_batch
    from picmetric_core.delete_cli import register as register_delete

    register_batch(commands)
    register_delete(commands)
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
    if args.command == "map":
        return map_command(args, settings)
    if args.action == "status":
        return weights_status_command(settings)
    return weights_fetch_command(settings)


if __name__ == "__main__":
    sys.exit(main())
