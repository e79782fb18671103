"""An image's pyramid levels side by side on one canvas, so P-Net sees them in one call.

P-Net is fully convolutional: an output cell depends only on the 12×12 window under it. A level placed
at an even offset therefore gives, inside the canvas's output, exactly the map it gives alone (the
stride-2 pooling stays aligned, and the mask hides whatever lies beyond the level's edge from the
pooling). MTCNN puts a photo's small levels on one canvas: they cost more in per-call overhead
(~0.5 ms a call on the CPU) than in arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Padded canvas shapes are rounded up to this, so compiled backends see few distinct shapes.
SHAPE_BUCKET = 32
# Added to P-Net's first activations outside every level so max pooling ignores them, as TensorFlow's
# "same" pooling ignores the padding at an image edge.
PAD_ACTIVATION = -1e9


@dataclass(frozen=True)
class Placement:
    """Where one level sits on the canvas (top-left corner, both even) and its size."""

    y: int
    x: int
    height: int
    width: int


@dataclass(frozen=True)
class Mosaic:
    """A canvas ``height`` × ``width`` (multiples of :data:`SHAPE_BUCKET`) and each level's place on it."""

    height: int
    width: int
    placements: tuple[Placement, ...]

    @property
    def pixels(self) -> int:
        return self.height * self.width


def pack(shapes: Sequence[tuple[int, int]]) -> Mosaic:
    """Shelf-pack level shapes (height, width), largest first as a pyramid gives them.

    The canvas is as wide as the two largest levels; the first shelf holds them and later shelves hold
    the rest left to right. For the levels after the first two of a 640×480 photo's pyramid the canvas
    is 352×224 (78,848 pixels) where padding each level to the bucket on its own gives 82,944.

    Example:
        >>> mosaic = pack([(288, 384), (204, 272), (144, 193)])
        >>> [(p.y, p.x) for p in mosaic.placements], (mosaic.height, mosaic.width)
        ([(0, 0), (0, 384), (288, 0)], (448, 672))
    """
    if not shapes:
        raise ValueError("no levels to pack")
    widths = [_even(w) for _, w in shapes]
    canvas_width = sum(widths[:2])
    placements, shelf_y, shelf_height, cursor = [], 0, 0, 0
    for (height, width), step in zip(shapes, widths, strict=True):
        if cursor + step > canvas_width:
            shelf_y, shelf_height, cursor = shelf_y + shelf_height, 0, 0
        placements.append(Placement(shelf_y, cursor, height, width))
        shelf_height = max(shelf_height, _even(height))
        cursor += step
    bottom = shelf_y + shelf_height
    return Mosaic(_round_up(bottom, SHAPE_BUCKET), _round_up(canvas_width, SHAPE_BUCKET), tuple(placements))


def canvas(levels: Sequence[np.ndarray], mosaic: Mosaic) -> tuple[np.ndarray, np.ndarray]:
    """P-Net's two inputs for one mosaic: the levels on a zero canvas, and the mask of their first
    activations (0 where a 3×3 window lies inside a level, :data:`PAD_ACTIVATION` elsewhere)."""
    image = np.zeros((mosaic.height, mosaic.width, 3), np.float32)
    mask = np.full((mosaic.height - 2, mosaic.width - 2, 1), PAD_ACTIVATION, np.float32)
    for level, place in zip(levels, mosaic.placements, strict=True):
        image[place.y : place.y + place.height, place.x : place.x + place.width] = level
        mask[place.y : place.y + place.height - 2, place.x : place.x + place.width - 2] = 0.0
    return image, mask


def level_map(output: np.ndarray, place: Placement) -> np.ndarray:
    """One level's cells out of the canvas's P-Net output (stride 2, cropped to the valid cells)."""
    top, left = place.y // 2, place.x // 2
    return output[top : top + output_size(place.height), left : left + output_size(place.width)]


def output_size(size: int) -> int:
    """P-Net's valid output cells along a side of ``size`` pixels: conv 3, pool 2/2 "same", conv 3, conv 3."""
    return -(-(size - 2) // 2) - 4


def _even(value: int) -> int:
    return value + (value & 1)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step
