"""Where image bytes live: one small interface, an S3 bucket or a local folder behind it.

Keys are content-addressed by the original image's md5 (:class:`ObjectKeys`), so writing the same
image twice writes the same bytes to the same keys: every ``put`` is idempotent.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from picmetric_core.config import Settings
from picmetric_core.errors import StoreUnavailable
from picmetric_core.formats import CONTENT_TYPE_BY_EXTENSION, EXTENSION_BY_CONTENT_TYPE, UNKNOWN_EXTENSION
from picmetric_core.intake.images import too_many_bytes

log = logging.getLogger(__name__)

T = TypeVar("T")

EXTENSIONS = EXTENSION_BY_CONTENT_TYPE
CONTENT_TYPES = CONTENT_TYPE_BY_EXTENSION | {"json": "application/json"}


class ObjectNotFound(LookupError):
    """No object under this key."""


@dataclass(frozen=True)
class ObjectKeys:
    """The object keys of one analysed image, all under its md5 (the overlays' once drawn: :func:`overlay_key`)."""

    original: str
    detections: str
    faces: str
    thumbnail: str

    @classmethod
    def for_image(cls, md5: str, content_type: str) -> ObjectKeys:
        """The keys for an image with this md5 and content type.

        Example:
            >>> ObjectKeys.for_image("4f055f233ff79efdb5fdd377b2161c45", "image/jpeg").original
            '4f055f233ff79efdb5fdd377b2161c45/original.jpg'
        """
        return cls(
            original=f"{md5}/original.{EXTENSIONS.get(content_type, UNKNOWN_EXTENSION)}",
            detections=overlay_key(md5, "detections"),
            faces=overlay_key(md5, "faces"),
            thumbnail=f"{md5}/thumb.jpg",
        )


def overlay_key(md5: str, kind: str) -> str:
    """Where an overlay (``"detections"`` or ``"faces"``) of an image is kept once it has been drawn.

    Overlays are not written when an image is analysed: the service draws one the first time it is
    asked for and keeps it under this key (analyses stored before that have theirs already).

    Example:
        >>> overlay_key("4f055f233ff79efdb5fdd377b2161c45", "faces")
        '4f055f233ff79efdb5fdd377b2161c45/faces.png'
    """
    return f"{md5}/{kind}.png"


def analysis_key(md5: str) -> str:
    """Where the analysis of an image is kept as JSON.

    It is written after the image's other objects, so its presence means they are all stored and a
    retry (after the database failed) can reuse them instead of running the networks again.
    """
    return f"{md5}/analysis.json"


def content_type_of(key: str) -> str:
    """The Content-Type an object is stored with, from its key's extension."""
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")


class ObjectStore(Protocol):
    """What the service needs from a place that keeps bytes under keys. Implementations are thread-safe."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing what was there."""
        ...

    def exists(self, key: str) -> bool: ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises :class:`ObjectNotFound` when there are none."""
        ...

    def url(self, key: str) -> str | None:
        """A link a browser can open, or ``None`` when the store has no links (read with ``get``)."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """Delete every key (one that is not there counts as deleted); returns the keys that are still there.

        Raises:
            StoreUnavailable: the store could not be reached (nothing is known to be deleted).
        """
        ...

    def describe(self) -> str:
        """Where the objects are, for messages (never contains secrets)."""
        ...


class LocalStore:
    """Objects as files under one folder: the default when no bucket is configured."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a valid object key: {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a reader never sees half an object.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError as error:
            raise StoreUnavailable(f"Could not write to the image folder {self.root}: {error.strerror}.") from error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as error:
            raise ObjectNotFound(key) from error
        except OSError as error:
            raise StoreUnavailable(f"Could not read from the image folder {self.root}: {error.strerror}.") from error

    def url(self, key: str) -> str | None:
        return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        if keys and not self.root.is_dir():
            raise StoreUnavailable(f"The image folder {self.root} is not there.")
        failed = []
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("could not delete %s from %s: %s", key, self.root, error.strerror)
                failed.append(key)
                continue
            # The image's folder goes with its last object: its name is the md5.
            with suppress(OSError):
                path.parent.rmdir()
        return failed

    def describe(self) -> str:
        return f"folder {self.root}"


# S3 error codes worth another try; anything else (no such bucket, bad credentials) fails at once.
TRANSIENT_CODES = frozenset(
    ["500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling"]
)
S3_DELETE_BATCH = 1000  # keys in one DeleteObjects request, at most
CREDENTIAL_CODES = frozenset(["403", "Forbidden", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"])


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient S3 errors are retried (exponential backoff with jitter).

    ``budget_s`` bounds one store operation, every try and wait included: no retry starts (and no
    wait is slept) that would end past it, and the client's own timeouts are capped by it.
    """

    attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 3.0
    budget_s: float = 6.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class S3Store:
    """Objects in an S3 bucket (AWS, SeaweedFS, MinIO, ...).

    Objects are private unless ``ExtraArgs`` asks for ``"ACL": "public-read"``; links are then
    plain ``S3_LOCATION`` URLs, otherwise presigned GET URLs that expire.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        extra_args: dict[str, Any] | None = None,
        public_location: str | None = None,
        presign_expiry_s: int = 3600,
        retry: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.bucket = bucket
        # The old .env sent every object as image/png: the Content-Type is always the object's own.
        self.extra_args = {k: v for k, v in (extra_args or {}).items() if k != "ContentType"}
        self.public_location = public_location.rstrip("/") + "/" if public_location else None
        self.presign_expiry_s = presign_expiry_s
        self.retry = retry
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> S3Store:
        """An S3 store for ``S3_BUCKET`` with the credentials, endpoint and ``ExtraArgs`` in ``settings``."""
        import boto3
        from botocore.config import Config

        retry = kwargs.pop("retry", None) or RetryPolicy(budget_s=settings.store_budget_s)
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_key.get_secret_value() if settings.s3_key else None,
            aws_secret_access_key=settings.s3_secret.get_secret_value() if settings.s3_secret else None,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
                connect_timeout=min(3.0, retry.budget_s),
                read_timeout=retry.budget_s,
                # Retries are ours (see RetryPolicy), so a dead endpoint is reported in seconds.
                retries={"total_max_attempts": 1},
            ),
        )
        public_location = settings.s3_location if settings.public_read else None
        return cls(
            client,
            settings.s3_bucket or "",
            extra_args=settings.s3_extra_args,
            public_location=public_location,
            presign_expiry_s=settings.presign_expiry_s,
            retry=retry,
            **kwargs,
        )

    def describe(self) -> str:
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None) or "AWS S3"
        return f"bucket '{self.bucket}' at {endpoint}"

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._call(
            "upload",
            key,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **self.extra_args
            ),
        )

    def exists(self, key: str) -> bool:
        try:
            self._call("check", key, lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ObjectNotFound:
            return False
        return True

    def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with ``max_bytes``, a larger object is refused before its body is read.

        Raises:
            ObjectNotFound, StoreUnavailable; ImageTooLarge: over ``max_bytes``.
        """
        response = self._call("download", key, lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        size = int(response.get("ContentLength") or 0)
        if max_bytes is not None and size > max_bytes:
            response["Body"].close()
            raise too_many_bytes(size, max_bytes)
        return response["Body"].read()

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, a page of 1,000 at a time (each page within the store's budget)."""
        arguments: dict[str, str] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self._call("list", prefix, lambda asked=dict(arguments): self.client.list_objects_v2(**asked))
            yield from (entry["Key"] for entry in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return
            arguments["ContinuationToken"] = page["NextContinuationToken"]

    def url(self, key: str) -> str:
        from botocore.exceptions import NoCredentialsError

        if self.public_location:
            return self.public_location + key
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_expiry_s
            )
        except NoCredentialsError as error:
            raise self._no_credentials() from error

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=key))

    def delete_many(self, keys: Sequence[str]) -> list[str]:
        """One ``DeleteObjects`` request per 1,000 keys (S3's limit)."""
        failed: list[str] = []
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = list(keys[start : start + S3_DELETE_BATCH])
            delete = {"Objects": [{"Key": key} for key in batch], "Quiet": True}
            response = self._call(
                "delete", batch[0], lambda delete=delete: self.client.delete_objects(Bucket=self.bucket, Delete=delete)
            )
            for error in response.get("Errors", []):
                log.warning("S3 could not delete %s: %s", error.get("Key"), error.get("Code"))
                failed.append(error.get("Key", ""))
        return failed

    def _call(self, action: str, key: str, operation: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

        budget = self.retry.budget_s
        deadline = time.monotonic() + budget
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return operation()
            except ClientError as error:
                code = _error_code(error)
                if code in {"404", "NoSuchKey", "NotFound"}:
                    raise ObjectNotFound(key) from error
                if code not in TRANSIENT_CODES or attempt == self.retry.attempts:
                    raise self._unavailable(action, error) from error
                last: Exception = error
            except NoCredentialsError as error:
                raise self._no_credentials() from error
            except ParamValidationError as error:
                raise StoreUnavailable(
                    f"The image store settings are not valid for an {action}: {error}. Check ExtraArgs."
                ) from error
            except BotoCoreError as error:  # connection refused, timeouts, DNS, ...
                if attempt == self.retry.attempts:
                    raise self._unavailable(action, error) from error
                last = error
            delay = self.retry.delay(attempt)
            if time.monotonic() + delay >= deadline:
                log.warning("S3 %s of %s failed (%s); its %gs budget is spent", action, key, _summary(last), budget)
                raise self._unavailable(action, last, tries=attempt) from last
            log.warning("S3 %s of %s failed (%s); retrying in %.1fs", action, key, _summary(last), delay)
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _no_credentials(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"The image store has no credentials for the {self.describe()}: set S3_KEY and S3_SECRET."
        )

    def _unavailable(self, action: str, error: Exception, tries: int | None = None) -> StoreUnavailable:
        from botocore.exceptions import ClientError

        where = self.describe()
        if isinstance(error, ClientError):
            code = _error_code(error)
            if code == "NoSuchBucket":
                return StoreUnavailable(f"The image store has no {where}: create it or fix S3_BUCKET.")
            if code in CREDENTIAL_CODES:
                return StoreUnavailable(
                    f"The image store refused our credentials ({code}) for the {where}: check S3_KEY and S3_SECRET."
                )
            return StoreUnavailable(f"The image store could not {action} an image ({code}) in the {where}.")
        return StoreUnavailable(
            f"The image store is not reachable ({_summary(error)}): the {where} did not answer after "
            f"{tries or self.retry.attempts} tries ({self.retry.budget_s:g} s at most). "
            "Check that it is running and S3_ENDPOINT_URL."
        )


def _error_code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _summary(error: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        return _error_code(error) or type(error).__name__
    return type(error).__name__


def open_store(settings: Settings) -> ObjectStore:
    """The store ``settings`` describe: the S3 bucket when ``S3_BUCKET`` is set, else a local folder.

    Example:
        >>> open_store(Settings(data_dir="/tmp/picmetric")).describe()
        'folder /tmp/picmetric/store'
    """
    if settings.uses_s3:
        return S3Store.from_settings(settings)
    return LocalStore(settings.resolved_store_dir)
