"""Every error a user can be shown as it is: each message says what went wrong and what to do.

Internal signals that never reach a user as such (``store.objects.ObjectNotFound``, a lookup the
API answers with 404) stay next to the code that raises them.
"""

from __future__ import annotations


class PicMetricError(Exception):
    """Base of every error with a message fit for a user. ``status`` is the HTTP status for the API."""

    status: int = 400


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


class DatabaseUnavailable(PicMetricError):
    status = 503


class ModelsNotReady(PicMetricError):
    """The networks are still loading, or failed to load."""

    status = 503
