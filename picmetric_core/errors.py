"""Every error a user can be shown as it is: each message says what went wrong and what to do.

Messages of server-side failures (database, store, weights) name the infrastructure, which helps
an operator at the command line; API clients get :func:`client_message` instead, and the details
go to the server log. Internal signals that never reach a user as such (``store.objects.ObjectNotFound``,
a lookup the API answers with 404) stay next to the code that raises them.
"""

from __future__ import annotations

import re

# An absolute filesystem path standing alone (not the path part of a URL, which follows "host/").
_PATH = re.compile(r"(?<![\w/.:-])/[^\s'\"(),;]*")


class PicMetricError(Exception):
    """Base of every error with a message fit for a user. ``status`` is the HTTP status for the API.

    ``public_message``, when set, replaces the message for API clients (the full one is logged).
    ``retry_after_s``, when set, is sent as ``Retry-After``.
    """

    status: int = 400
    public_message: str | None = None
    retry_after_s: int | None = None


def without_paths(text: str) -> str:
    """``text`` with every absolute filesystem path cut to its last part.

    Example:
        >>> without_paths("/srv/models/yolov3.weights is truncated; see https://example.com/a/b")
        'yolov3.weights is truncated; see https://example.com/a/b'
    """
    return _PATH.sub(lambda match: match.group().rstrip("/").rsplit("/", 1)[-1] or "(a folder)", text)


def client_message(error: PicMetricError) -> str:
    """What an API client is told: the public message of a server-side failure, never a path."""
    if error.public_message is not None:
        return error.public_message
    return without_paths(str(error)) if error.status >= 500 else str(error)


class ImageRejected(PicMetricError):
    """The bytes are not an image we can analyse."""


class NotAnImage(ImageRejected):
    status = 415


class CorruptImage(ImageRejected):
    status = 400


class ImageTooLarge(ImageRejected):
    """Too many bytes or too many pixels."""

    status = 413


class UrlRefused(PicMetricError):
    """A URL we will not fetch (scheme, private address, too many redirects, ...)."""

    status = 422


class FilterRejected(PicMetricError, ValueError):
    """Text given to filter or look up by that must not reach the database (see ``text_filters``).

    A ``ValueError`` too, so that code refusing an invalid history query refuses it with the rest.
    """

    status = 422


class FetchFailed(PicMetricError):
    """A URL we tried and could not fetch (timeout, HTTP error, wrong content type)."""

    status = 422


class WeightsError(PicMetricError):
    """Missing, truncated or mismatched weight files."""

    status = 500


class UnsafePickleError(WeightsError):
    """A weights pickle asks for something a state dict never needs (and an attacker might)."""


class StoreUnavailable(PicMetricError):
    status = 503
    public_message = "The image store is not available right now; try again in a minute."
    retry_after_s = 30


class DatabaseUnavailable(PicMetricError):
    status = 503
    public_message = "The database is not available right now; try again in a minute."
    retry_after_s = 30


class ServerBusy(PicMetricError):
    """Too much of one kind of work at once (URL fetches); the request was refused, not queued."""

    status = 503
    retry_after_s = 5


class ModelsNotReady(PicMetricError):
    """The networks are still loading, or failed to load."""

    status = 503


class VideoRejected(PicMetricError):
    """A clip we will not analyse: not a video, damaged, audio only, an unsupported codec, over a limit."""

    status = 422


class VideoTooLarge(VideoRejected):
    """Too many bytes, pixels, seconds or frames."""

    status = 413


class VideoTimedOut(VideoRejected):
    """The analysis passed its deadline (a stalled source or decoder)."""

    status = 422
