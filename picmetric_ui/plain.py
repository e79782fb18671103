"""Text a user controls (file names, URLs) shown as plain text: never read as Markdown or HTML."""

from __future__ import annotations

import html

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

_HEADING_STYLE = "margin:0.25rem 0 0.25rem 0;font-weight:600;line-height:1.3;overflow-wrap:anywhere;"
_SIZES = {1: "2.25rem", 2: "1.75rem", 3: "1.35rem", 4: "1.05rem"}


def heading(text: str, level: int = 3) -> None:
    """A heading whose text is shown exactly as given (``st.title``/``st.subheader`` would read Markdown)."""
    st.html(
        f'<h{level} class="pm-plain" style="{_HEADING_STYLE}font-size:{_SIZES[level]};">{html.escape(text)}</h{level}>'
    )


def line(text: str, *, muted: bool = False, bold: bool = False, into: DeltaGenerator | None = None) -> None:
    """One line (wrapped where needed, never cut off) of plain text, in ``into`` (a placeholder) if given."""
    style = "margin:0;overflow-wrap:anywhere;"
    if muted:
        style += "opacity:0.7;font-size:0.9rem;"
    if bold:
        style += "font-weight:600;"
    (into or st).html(f'<p class="pm-plain" style="{style}">{html.escape(text)}</p>')
