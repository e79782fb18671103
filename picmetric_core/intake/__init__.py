"""Getting images in: one :func:`intake` for every door (``incoming``: bytes with a name or a URL, the one
URL rule and the one file-name rule), decoding bytes within limits (``images``), fetching URLs safely
(``fetch``) and cleaning file names (``names``)."""

from picmetric_core.intake.incoming import (
    Incoming,
    Received,
    SourceKind,
    Upload,
    decode_received,
    intake,
    is_url,
    receive,
    source_filename,
    url_filename,
)

__all__ = [
    "Incoming",
    "Received",
    "SourceKind",
    "Upload",
    "decode_received",
    "intake",
    "is_url",
    "receive",
    "source_filename",
    "url_filename",
]
