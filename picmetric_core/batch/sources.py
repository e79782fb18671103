"""What a batch reads: sources expanded into items, each item's bytes, and which sources a client may name.

A source is a local folder (searched recursively for image and video file names), a glob, a text file with one
path or URL per line, or ``s3://bucket/prefix`` on the configured S3 endpoint. An item is one local
path, one http(s) URL or one ``s3://bucket/key``.
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath

from picmetric_core.config import Settings
from picmetric_core.errors import PicMetricError, StoreUnavailable
from picmetric_core.intake import Received, Upload, is_url, receive, source_filename, url_filename
from picmetric_core.intake.fetch import fetch_url
from picmetric_core.intake.images import UPLOAD_EXTENSIONS, sniff_format, too_many_bytes
from picmetric_core.intake.names import MAX_FILENAME_CHARS
from picmetric_core.store.objects import ObjectNotFound, S3Store
from picmetric_core.video.probe import is_video, sniff_container

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"
IMAGE_SUFFIXES = frozenset(f".{extension}" for extension in UPLOAD_EXTENSIONS)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi"})
"""Listed as items too; whether an item is a clip is decided by its container (:mod:`picmetric_core.batch.videos`)."""
ITEM_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES


class SourceError(PicMetricError):
    """A source that cannot be listed (missing folder, empty glob, unknown bucket)."""

    status = 422


class SourceNotAllowed(PicMetricError):
    """A source outside the folders and buckets a client may name."""

    status = 403


def list_items(sources: Sequence[str], settings: Settings) -> list[str]:
    """Every item of ``sources``, in a stable order, each once.

    Raises:
        SourceError: a source does not exist, matches nothing, or cannot be listed.
    """
    items: dict[str, None] = {}
    for source in sources:
        found = 0
        for item in _expand(source.strip(), settings):
            items.setdefault(item, None)
            found += 1
        if not found:
            raise SourceError(f"No images found in {source!r}.")
    return list(items)


def read_item(item: str, settings: Settings) -> Received:
    """The bytes of one item and the name it is stored under (:mod:`picmetric_core.intake`'s rules: a URL
    is named after redirects), refusing anything over its limit before reading it: ``settings.video_max_bytes``
    for a clip (a file or a URL that starts like one), ``settings.max_image_bytes`` for anything else.

    Raises:
        PicMetricError: a message fit for the user (missing file, refused URL, too large, S3 error).
    """
    if is_url(item):
        return _fetch_item(item, settings)
    if item.startswith(S3_SCHEME):
        return receive(Upload(_read_s3(item, settings), item), settings)
    path = Path(item)
    try:
        size = path.stat().st_size
        limit = settings.video_max_bytes if is_video(path) else settings.max_image_bytes
        if size > limit:
            raise too_many_bytes(size, limit)
        return receive(Upload(path.read_bytes(), item), settings)
    except OSError as error:
        raise SourceError(f"Could not read {path.name}: {error.strerror or 'unreadable'}.") from None


def _fetch_item(url: str, settings: Settings) -> Received:
    """A URL item under every rule of a photo's URL fetch, except that a clip is taken too, under the video byte
    limit (what the body starts like decides, as a file's container does). One fetch at a time per worker: no
    fetch slot to take."""

    def photo_or_clip(head: bytes) -> bool:
        return sniff_format(head) is not None or sniff_container(head) is not None

    def limit_for(head: bytes) -> int:
        return settings.video_max_bytes if sniff_container(head) else settings.max_image_bytes

    fetched = fetch_url(
        url,
        settings,
        max_bytes=max(settings.max_image_bytes, settings.video_max_bytes),
        accept=photo_or_clip,
        limit_for=limit_for,
    )
    return Received(fetched.data, url_filename(fetched.final_url), "url", url)


def item_filename(item: str) -> str:
    """An item as job views and messages name it: its file name (:func:`source_filename`), else the item."""
    return source_filename(item) or item[:MAX_FILENAME_CHARS]


def check_allowed(sources: Sequence[str], allowed: Sequence[str]) -> None:
    """Refuse any source that is not inside one of the ``allowed`` folders or ``s3://bucket/prefix`` locations.

    Raises:
        SourceNotAllowed: naming the first refused source (never the allowed list).
    """
    for source in sources:
        if not any(_inside(source.strip(), place) for place in allowed):
            raise SourceNotAllowed(
                f"{source!r} is not in a folder or bucket that batch jobs may read; "
                "ask an administrator to add it to PICMETRIC_BATCH_ALLOWED_SOURCES."
            )


def check_items_allowed(items: Sequence[str], allowed: Sequence[str]) -> None:
    """Refuse listed items outside the allowed places (a list file may name any path); URLs keep the fetch rules.

    Raises:
        SourceNotAllowed: naming the first refused item by its file name only.
    """
    for item in items:
        if not is_url(item) and not any(_inside(item, place) for place in allowed):
            raise SourceNotAllowed(
                f"{item_filename(item)!r} is listed from outside the folders and buckets that batch jobs may read."
            )


def _inside(source: str, place: str) -> bool:
    if place.startswith(S3_SCHEME) or source.startswith(S3_SCHEME):
        if not (place.startswith(S3_SCHEME) and source.startswith(S3_SCHEME)):
            return False
        if "/../" in f"{source}/":
            return False
        root = place.rstrip("/")
        return source == root or source.startswith(root + "/")
    if is_url(source) or any(mark in source for mark in "*?["):
        return False  # globs could climb out with "..": name a folder or a list file instead
    try:
        resolved = Path(source).resolve()
        return resolved.is_relative_to(Path(place).resolve())
    except (OSError, ValueError):
        return False


def _expand(source: str, settings: Settings) -> Iterator[str]:
    if source.startswith(S3_SCHEME):
        yield from _list_s3(source, settings)
    elif is_url(source):
        yield source
    elif any(mark in source for mark in "*?["):
        yield from (str(Path(p).resolve()) for p in sorted(glob.glob(source, recursive=True)) if _is_image_name(p))
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            yield from (str(p.resolve()) for p in sorted(path.rglob("*")) if p.is_file() and _is_image_name(p))
        elif path.is_file() and _is_image_name(path):
            yield str(path.resolve())
        elif path.is_file():
            yield from _listed(path)
        else:
            raise SourceError(f"No such folder or file: {source!r}.")


def _listed(path: Path) -> Iterator[str]:
    """Items named in a text file, one per line (blank lines and ``#`` comments skipped)."""
    for line in path.read_text(errors="replace").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if is_url(entry) or entry.startswith(S3_SCHEME):
            yield entry
        else:
            listed = Path(entry).expanduser()
            yield str((listed if listed.is_absolute() else path.parent / listed).resolve())


def _is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ITEM_SUFFIXES and Path(path).is_file()


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    return bucket, key


def _list_s3(source: str, settings: Settings) -> Iterator[str]:
    bucket, prefix = _split_s3(source)
    try:
        for key in _source_store(settings, bucket).keys(prefix):
            if PurePosixPath(key).suffix.lower() in ITEM_SUFFIXES:
                yield f"{S3_SCHEME}{bucket}/{key}"
    except StoreUnavailable as error:
        log.warning("listing %s failed: %s", source, error)
        raise SourceError(f"Could not list {source!r}: the S3 endpoint refused it or did not answer.") from None


def _read_s3(item: str, settings: Settings) -> bytes:
    bucket, key = _split_s3(item)
    try:
        video = PurePosixPath(key).suffix.lower() in VIDEO_SUFFIXES
        return _source_store(settings, bucket).get(
            key, max_bytes=settings.video_max_bytes if video else settings.max_image_bytes
        )
    except ObjectNotFound:
        raise SourceError(f"Could not read {item_filename(item)}: it is not in the bucket.") from None
    except StoreUnavailable as error:
        log.warning("reading %s failed: %s", item, error)
        raise SourceError(
            f"Could not read {item_filename(item)}: the S3 endpoint refused it or did not answer."
        ) from None


def _source_store(settings: Settings, bucket: str) -> S3Store:
    """The bucket of a source as an object store with our credentials, retries and time budget (one per
    worker process, credentials and bucket)."""
    key = settings.s3_key.get_secret_value() if settings.s3_key else None
    secret = settings.s3_secret.get_secret_value() if settings.s3_secret else None
    return _store_for(settings.s3_endpoint_url, settings.s3_region, key, secret, bucket, settings.store_budget_s)


@lru_cache(maxsize=8)
def _store_for(
    endpoint_url: str | None, region: str, key: str | None, secret: str | None, bucket: str, budget_s: float
) -> S3Store:
    settings = Settings(
        _env_file=None,
        s3_endpoint_url=endpoint_url,
        s3_region=region,
        s3_key=key,
        s3_secret=secret,
        s3_bucket=bucket,
        store_budget_s=budget_s,
    )
    return S3Store.from_settings(settings)
