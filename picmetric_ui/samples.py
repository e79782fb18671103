"""Sample photos a first-time viewer can analyse with one click, from scikit-image's bundled data.

Licences (from scikit-image's ``data/README.txt``): *astronaut* is a NASA photo of Eileen Collins, in
the public domain; *chelsea* (a cat) by Stefan van der Walt and *coffee* by Rachel Michetti are CC0.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image, ImageOps
from skimage import data


@dataclass(frozen=True)
class Sample:
    name: str  # the file name the analysis is stored under
    caption: str
    licence: str
    load: Callable[[], np.ndarray]


SAMPLES = (
    Sample("astronaut.png", "Astronaut", "NASA, public domain", data.astronaut),
    Sample("chelsea.png", "Cat", "Stefan van der Walt, CC0", data.chelsea),
    Sample("coffee.png", "Coffee", "Rachel Michetti, CC0", data.coffee),
)


@st.cache_resource(show_spinner=False)
def sample_thumbnail(name: str) -> bytes:
    """The sample cropped to 4:3, so the row of samples lines up."""
    buffer = io.BytesIO()
    ImageOps.fit(Image.open(io.BytesIO(sample_png(name))), (240, 180)).save(buffer, format="PNG")
    return buffer.getvalue()


@st.cache_resource(show_spinner=False)
def sample_png(name: str) -> bytes:
    """The sample's PNG bytes (the same bytes every time, so a second click finds the stored result)."""
    sample = next(s for s in SAMPLES if s.name == name)
    buffer = io.BytesIO()
    Image.fromarray(sample.load()).save(buffer, format="PNG")
    return buffer.getvalue()
