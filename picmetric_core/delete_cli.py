"""``picmetric delete``: delete stored analyses by md5, by the History filters, by age, or by the retention setting.

Every run first removes the objects earlier deletes left in a store that failed, so a cron job that runs
``picmetric delete --retention`` daily also finishes what a flaky store interrupted.

A selection by filters, age, retention or ``--all`` deletes the video clips it selects too
(:mod:`picmetric_core.video.selection`), each with its row, tracks and every object; md5s named one by one are
photos (``--video ID`` names clips).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from picmetric_core.config import Settings
from picmetric_core.history import HistoryFilters

if TYPE_CHECKING:
    from picmetric_core.history import HistoryQuery
    from picmetric_core.runtime import Runtime
    from picmetric_core.store.deletions import DeleteResult, PendingObjects

DESCRIPTION = (
    "Delete stored analyses and everything kept for them (original, thumbnail, overlays, results): name md5s, "
    "or give History filters, --older-than or --retention (PICMETRIC_RETENTION_DAYS), or --all; these also "
    "delete the video clips they select (original, annotated clip, poster, tracks). Nothing is deleted by an "
    "empty selection. Use --dry-run to list what would go."
)
VIDEO_ID = re.compile(r"[0-9a-f]{32}")
AGE = re.compile(r"(\d+)\s*([smhdw])")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a duration.

    Example:
        >>> age("30d"), age("12h")
        (datetime.timedelta(days=30), datetime.timedelta(seconds=43200))
    """
    found = AGE.fullmatch(text.strip().lower())
    if found is None or int(found[1]) == 0:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (give a number and s, m, h, d or w, e.g. 30d)")
    return timedelta(**{AGE_UNITS[found[2]]: int(found[1])})


def register(commands: Any) -> None:
    """Add the ``delete`` command to the main CLI's subcommands."""
    from picmetric_core.cli import add_model_flags

    parser = commands.add_parser("delete", help="delete stored analyses and their images", description=DESCRIPTION)
    parser.add_argument("md5s", nargs="*", metavar="MD5", help="the md5 of an analysis to delete")
    add_model_flags(parser, HistoryFilters)
    parser.add_argument("--older-than", type=age, metavar="AGE", help="analysed longer ago than AGE (30d, 12h, …)")
    parser.add_argument(
        "--retention", action="store_true", help="analysed longer ago than PICMETRIC_RETENTION_DAYS (if it is set)"
    )
    parser.add_argument("--all", action="store_true", help="every analysis and clip (needed when nothing else selects)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    parser.add_argument(
        "--retry-pending", action="store_true", help="only remove objects earlier deletes left in a failed store"
    )
    parser.add_argument(
        "--video",
        dest="videos",
        action="append",
        default=[],
        metavar="ID",
        help="a stored video clip (its video_id) to delete with its annotated clip, tracks and crops; repeatable",
    )
    parser.set_defaults(handler=delete_command)


def delete_command(args: argparse.Namespace, settings: Settings) -> int:
    from picmetric_core.cli import flag_problems, model_from_flags
    from picmetric_core.errors import PicMetricError
    from picmetric_core.runtime import shared_runtime

    if args.videos:
        return _delete_videos(args, settings)
    try:
        filters = _filters(args, settings, model_from_flags(HistoryFilters, args))
        query = filters.query() if filters is not None else None
    except ValidationError as error:
        print(f"picmetric delete: {flag_problems(error)}", file=sys.stderr)
        return 2
    except (ValueError, _Refused) as error:
        print(f"picmetric delete: {error}", file=sys.stderr)
        return 2
    if args.retention and settings.retention_days is None:
        print("PICMETRIC_RETENTION_DAYS is not set: nothing is deleted.")
        return 0
    runtime = shared_runtime(settings)  # its loader never starts: a delete runs no network
    try:
        service = runtime.service()
        if args.retry_pending:
            result, left = None, service.retry_deletes()
        else:
            if args.md5s:
                result = service.delete(args.md5s, dry_run=args.dry_run)
            else:
                assert query is not None
                result = service.delete_matching(query, dry_run=args.dry_run)
            left = result.pending
        status = _report(result, left)
        if query is not None:  # a selection by filters: the clips it selects go too
            status = max(status, _delete_matching_videos(runtime, query, dry_run=args.dry_run))
    except ValueError as error:  # an md5 that is not one
        print(f"picmetric delete: {error}", file=sys.stderr)
        return 2
    except PicMetricError as error:
        print(f"picmetric delete: {error} Nothing was deleted.", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    return status


def _delete_matching_videos(runtime: Runtime, query: HistoryQuery, *, dry_run: bool) -> int:
    """Delete (or list) the clips ``query`` selects, one at a time: each goes whole (row, tracks, objects) or not."""
    from picmetric_core.errors import PicMetricError

    deleted = 0
    try:
        videos = runtime.videos()
        for video_id in videos.matching(query):
            if dry_run or videos.delete(video_id):
                print(video_id)
                deleted += 1
    except PicMetricError as error:
        done = "" if dry_run else " The videos listed above were deleted; no other was."
        print(f"picmetric delete: {error}{done}", file=sys.stderr)
        return 1
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {deleted} videos" + (" (dry run: nothing was deleted)" if dry_run else ""))
    return 0


def _delete_videos(args: argparse.Namespace, settings: Settings) -> int:
    """``--video ID…``: those clips only (a selection of photos is refused alongside, so nothing else goes)."""
    from picmetric_core.errors import PicMetricError
    from picmetric_core.runtime import shared_runtime

    chosen = [name for name in HistoryFilters.model_fields if getattr(args, name, None) is not None]
    if args.md5s or chosen or args.older_than or args.retention or args.all or args.retry_pending:
        print("picmetric delete: --video takes no other selection (nothing was deleted)", file=sys.stderr)
        return 2
    if bad := [video_id for video_id in args.videos if not VIDEO_ID.fullmatch(video_id)]:
        print(f"picmetric delete: not a video id: {bad[0]!r} (32 hex digits)", file=sys.stderr)
        return 2
    runtime = shared_runtime(settings)  # its loader never starts: a delete runs no network
    status, deleted = 0, 0
    try:
        videos = runtime.videos()
        for video_id in args.videos:
            if videos.store().find(video_id) is None:
                print(f"picmetric delete: no video {video_id}", file=sys.stderr)
                status = 1
            elif args.dry_run or videos.delete(video_id):
                print(video_id)
                deleted += 1
    except PicMetricError as error:
        print(f"picmetric delete: {error}", file=sys.stderr)
        return 1
    finally:
        runtime.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {deleted} videos" + (" (dry run: nothing was deleted)" if args.dry_run else ""))
    return status


class _Refused(Exception):
    """A selection the command will not run (it would delete more than was asked for)."""


def _filters(args: argparse.Namespace, settings: Settings, filters: HistoryFilters) -> HistoryFilters | None:
    """The filters of the selection (``None``: the md5s named, or only retrying)."""
    chosen = [name for name in HistoryFilters.model_fields if getattr(filters, name) is not None]
    ages = [flag for flag, given in (("--until", "until" in chosen), ("--older-than", args.older_than),
                                     ("--retention", args.retention)) if given]  # fmt: skip
    if len(ages) > 1:
        raise _Refused(f"give one of {', '.join(ages)}")
    if args.md5s and (chosen or ages or args.all):
        raise _Refused("name md5s, or select by filters, not both")
    if args.retry_pending:
        if args.md5s or chosen or ages or args.all:
            raise _Refused("--retry-pending takes no selection")
        return None
    if args.md5s:
        return None
    if not chosen and not ages and not args.all:
        raise _Refused("name md5s, or give a filter, --older-than, --retention or --all (nothing was deleted)")
    now = datetime.now(UTC)
    if args.older_than is not None:
        return filters.model_copy(update={"until": now - args.older_than})
    if args.retention and settings.retention_days is not None:
        return filters.model_copy(update={"until": now - timedelta(days=settings.retention_days)})
    return filters


def _report(result: DeleteResult | None, left: tuple[PendingObjects, ...]) -> int:
    status = 0
    if result is not None:
        for md5 in result.deleted:
            print(md5)
        for md5 in result.missing:
            print(f"picmetric delete: no analysis of {md5}", file=sys.stderr)
            status = 1
        verb = "would delete" if result.dry_run else "deleted"
        print(f"{verb} {len(result.deleted)} analyses" + (" (dry run: nothing was deleted)" if result.dry_run else ""))
    if left:
        keys = [key for item in left for key in item.keys]
        print(
            f"{len(keys)} objects of {len(left)} deleted analyses are still in the store (it failed); nothing shows "
            "them, and the next `picmetric delete` (or `picmetric delete --retry-pending`) removes them:",
            file=sys.stderr,
        )
        for key in keys:
            print(f"  {key}", file=sys.stderr)
        status = 1
    elif result is None:
        print("no objects left to remove")
    return status
