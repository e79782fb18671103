"""File names from users, made safe to store and show: no control characters, no folders, bounded length."""

from __future__ import annotations

import unicodedata

MAX_FILENAME_CHARS = 255
"""The database column's width."""

_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})  # control, format (bidi overrides), unassigned


def clean_filename(name: str | None) -> str | None:
    """``name`` without control or invisible formatting characters or folder parts; ``None`` if nothing is left.

    A NUL byte cannot be stored in Postgres text at all, and bidi overrides or newlines let a name
    pose as another one in lists, so they are removed rather than escaped.

    Example:
        >>> clean_filename("C:\\\\Users\\\\me\\\\holi\\x00day\\u202egpj.png\\n")
        'holidaygpj.png'
        >>> clean_filename("\\x00\\x01") is None
        True
    """
    if not name:
        return None
    kept = "".join(char for char in name if unicodedata.category(char) not in _DROPPED_CATEGORIES)
    last_part = kept.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = " ".join(last_part.split())[:MAX_FILENAME_CHARS].strip()
    return cleaned or None
