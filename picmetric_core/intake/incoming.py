"""An image coming in by any door: bytes with a name, or a URL, read within the limits into :class:`Incoming`.

The rules every door shares:

- :func:`is_url`: ``http://`` or ``https://`` (any case, after leading spaces) is a URL, the only kind
  :func:`~picmetric_core.intake.fetch.fetch_url` fetches; anything else is a file (a path, an
  ``s3://`` key, an upload's name).
- File names (:func:`source_filename`): an upload keeps the name it came with; a URL is named by the
  last non-empty segment of its path after redirects, without query or fragment, percent-decoded
  (``my%20dog.jpg`` → ``my dog.jpg``); either is cleaned by :func:`~picmetric_core.intake.names.clean_filename`
  (no folders, control or invisible characters). ``None`` when nothing is left (``https://example.com/``).

Example:
    >>> from picmetric_core.config import Settings
    >>> incoming = intake(Upload(open("dog.jpg", "rb").read(), "C:\\\\photos\\\\dog.jpg"), Settings())  # doctest: +SKIP
    >>> incoming.filename, incoming.source, incoming.image.format  # doctest: +SKIP
    ('dog.jpg', 'upload', 'JPEG')
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from picmetric_core.config import Settings
from picmetric_core.intake.fetch import FetchSlots, fetch_url
from picmetric_core.intake.images import DecodedImage, decode_for
from picmetric_core.intake.names import clean_filename

SourceKind = Literal["upload", "url", "live"]
"""How an image came in, as stored with it (``source``): a file, a URL, or a frame of the live camera."""


@dataclass(frozen=True)
class Upload:
    """Bytes a person or a program handed over, with the name they came under (if any)."""

    data: bytes
    name: str | None = None
    source: Literal["upload", "live"] = "upload"


@dataclass(frozen=True)
class Received:
    """An image's bytes as they came in, not decoded yet, with where they came from."""

    data: bytes
    filename: str | None  # cleaned, see the module's rules
    source: SourceKind
    source_url: str | None = None  # a URL as given (not after redirects)


@dataclass(frozen=True)
class Incoming:
    """An image ready for the service: decoded within the limits, with where it came from."""

    image: DecodedImage
    filename: str | None
    source: SourceKind
    source_url: str | None = None


def is_url(text: str) -> bool:
    """Whether ``text`` is a web address to fetch rather than a file.

    Example:
        >>> is_url("https://example.com/dog.jpg"), is_url("  HTTP://example.com"), is_url("s3://bucket/dog.jpg")
        (True, True, False)
        >>> is_url("/photos/http://x.jpg"), is_url("ftp://example.com/dog.jpg")
        (False, False)
    """
    return text.lstrip().lower().startswith(("http://", "https://"))


def url_filename(url: str) -> str | None:
    """The file name a URL gives: its path's last non-empty segment, percent-decoded and cleaned.

    Example:
        >>> url_filename("https://example.com/photos/my%20dog.jpg?size=large#top")
        'my dog.jpg'
        >>> url_filename("https://example.com/albums/summer/"), url_filename("https://example.com/?id=7")
        ('summer', None)
    """
    segments = [segment for segment in urlsplit(url.strip()).path.split("/") if segment]
    return clean_filename(unquote(segments[-1])) if segments else None


def source_filename(source: str) -> str | None:
    """The file name of a URL (:func:`url_filename`) or of a path or ``s3://`` key (its last part), cleaned.

    Example:
        >>> source_filename("/srv/photos/2026/dog.jpg"), source_filename("s3://archive/2026/cat?.png")
        ('dog.jpg', 'cat?.png')
        >>> source_filename("https://example.com/a/b.jpg?x=1")
        'b.jpg'
    """
    return url_filename(source) if is_url(source) else clean_filename(source)


def receive(given: Upload | str, settings: Settings, *, fetch_slots: FetchSlots | None = None) -> Received:
    """The bytes of an upload, or of the image at a URL (``given`` as a string is always a URL).

    Args:
        given: An :class:`Upload`, or the address a person typed.
        settings: The fetch's limits and timeouts.
        fetch_slots: Held while fetching: a fetch over the process's cap is refused at once.

    Raises:
        ServerBusy: every fetch slot is taken.
        UrlRefused, FetchFailed, FilterRejected, ImageTooLarge, NotAnImage: see :func:`fetch_url`.
    """
    if isinstance(given, Upload):
        return Received(given.data, clean_filename(given.name), given.source)
    with fetch_slots.slot() if fetch_slots is not None else nullcontext():
        fetched = fetch_url(given, settings)
    return Received(fetched.data, url_filename(fetched.final_url), "url", given)


def decode_received(received: Received, settings: Settings) -> Incoming:
    """``received`` decoded within the limits of ``settings``.

    Raises:
        ImageTooLarge, NotAnImage, CorruptImage: see :func:`~picmetric_core.intake.images.decode_for`.
    """
    return Incoming(decode_for(settings, received.data), received.filename, received.source, received.source_url)


def intake(given: Upload | str, settings: Settings, *, fetch_slots: FetchSlots | None = None) -> Incoming:
    """An upload, or the image at a URL, read and decoded: what every door hands the service.

    The fetch slot is held only while fetching, never while decoding.

    Raises:
        PicMetricError: a message fit for the person who sent the image (see :func:`receive`,
            :func:`decode_received`).
    """
    return decode_received(receive(given, settings, fetch_slots=fetch_slots), settings)
