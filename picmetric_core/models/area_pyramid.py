"""An image's pyramid levels by area averaging, all read from one summed-area table (compiled by numba).

Area averaging (``cv2.INTER_AREA``, TensorFlow's ``AREA``, what the ``mtcnn`` package resizes with) reads
every source pixel once per level however small the level: ten levels of a 640×480 photo cost OpenCV 7 ms,
the small ones as much as the large. A level's pixel is the mean of the source over its cell, so it is four
reads of the table of sums interpolated at the cell's corners (the table of a piecewise-constant image is
bilinear between its grid points): the table is built once (0.4 ms), each level then costs its own size.
Same values as ``cv2.INTER_AREA`` within 1e-4 of a 0–255 pixel, which is what runs where numba is not
installed (the GPU machine's Python).
"""

from __future__ import annotations

import cv2
import numpy as np

from picmetric_core.models.compiled_host import host_kernel


def area_levels(rgb: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """``rgb`` (H×W×C uint8) averaged down to each ``(height, width)`` in ``sizes`` (none larger), float32."""
    if _compiled_cells is None:
        pixels = rgb.astype(np.float32)
        return [cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA) for height, width in sizes]
    table = cv2.integral(rgb, sdepth=cv2.CV_64F)
    if table.ndim == 2:
        table = table[..., None]
    levels = []
    for height, width in sizes:
        level = np.empty((height, width, table.shape[2]), np.float32)
        _compiled_cells(table, level)
        levels.append(level)
    return levels


def _average_cells(table: np.ndarray, out: np.ndarray) -> None:
    source_h, source_w = table.shape[0] - 1, table.shape[1] - 1
    height, width, channels = out.shape
    step_y, step_x = source_h / height, source_w / width
    area = step_y * step_x
    left = np.empty(width + 1, np.int64)
    frac_x = np.empty(width + 1)
    for k in range(width + 1):
        position = k * step_x
        left[k] = min(int(position), source_w - 1)
        frac_x[k] = position - left[k]
    previous = np.empty((width + 1, channels))
    current = np.empty((width + 1, channels))
    for row in range(height + 1):
        position = row * step_y
        top = min(int(position), source_h - 1)
        frac_y = position - top
        for k in range(width + 1):
            x, f = left[k], frac_x[k]
            for c in range(channels):
                upper = table[top, x, c] + f * (table[top, x + 1, c] - table[top, x, c])
                lower = table[top + 1, x, c] + f * (table[top + 1, x + 1, c] - table[top + 1, x, c])
                current[k, c] = upper + frac_y * (lower - upper)
        if row > 0:
            for k in range(width):
                for c in range(channels):
                    cell = current[k + 1, c] - current[k, c] - previous[k + 1, c] + previous[k, c]
                    out[row - 1, k, c] = cell / area
        previous, current = current, previous


_compiled_cells = host_kernel(_average_cells)
