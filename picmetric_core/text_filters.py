"""One rule for text a user filters or looks up by (API query values, CLI flags, History inputs).

Such text is refused, with a message that says why, when it holds a control character (a NUL cannot
even be sent to Postgres), a lone surrogate (not encodable as UTF-8), a bidirectional override or
isolate (which makes text read as something else), or is longer than any stored value it could match.
Stored labels and file names never contain these characters, so refusing them hides no match.

Example:
    >>> check_filter_text("label filter", "dog")
    'dog'
    >>> check_filter_text("label filter", "dog\\x00")
    Traceback (most recent call last):
    ...
    picmetric_core.errors.FilterRejected: The label filter cannot contain control characters.
"""

from __future__ import annotations

import unicodedata

from picmetric_core.errors import FilterRejected

MAX_FILTER_CHARS = 200
"""The longest label, md5 or cursor filter; longer text matches nothing stored."""

MAX_URL_CHARS = 4096
"""The longest image URL accepted (presigned links run to about 2,000 characters)."""

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069)."""


def check_filter_text(name: str, text: str, *, max_chars: int = MAX_FILTER_CHARS) -> str:
    """``text`` unchanged if it is fit to filter by; else raises :class:`FilterRejected`.

    Args:
        name: What the text is, as the user knows it ("label filter", "url").
        text: The text the user gave.
        max_chars: The most characters accepted.

    Raises:
        FilterRejected: With a message naming ``name`` and what is wrong.
    """
    problem = filter_text_problem(text, max_chars=max_chars)
    if problem is not None:
        raise FilterRejected(f"The {name} {problem}.")
    return text


def check_url_text(url: str) -> str:
    """``url`` unchanged if its text is fit to fetch and store (the rule of :func:`check_filter_text`).

    Surrounding whitespace (a pasted newline) is allowed: the fetch strips it.

    Raises:
        FilterRejected: For a control character, lone surrogate or bidi control inside, or too long.
    """
    check_filter_text("url", url.strip(), max_chars=MAX_URL_CHARS)
    return url


def filter_text_problem(text: str, *, max_chars: int = MAX_FILTER_CHARS) -> str | None:
    """What is wrong with ``text`` as a filter, as the end of a sentence, or ``None`` when nothing is.

    Example:
        >>> filter_text_problem("\\u202egpj.exe")
        'cannot contain bidirectional-text controls (U+202A-U+202E, U+2066-U+2069)'
    """
    if len(text) > max_chars:
        return f"is too long: at most {max_chars} characters"
    categories = {unicodedata.category(char) for char in text}
    if "Cc" in categories:  # C0 (NUL, tab, newline, ...), DEL and C1
        return "cannot contain control characters"
    if "Cs" in categories:
        return "is not valid text (it holds a lone surrogate, which has no UTF-8 form)"
    if not BIDI_CONTROLS.isdisjoint(text):
        return "cannot contain bidirectional-text controls (U+202A-U+202E, U+2066-U+2069)"
    return None
