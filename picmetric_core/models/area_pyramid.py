"""An image's pyramid levels by area averaging, all read from one summed-area table (compiled by numba).

Area averaging (``cv2.INTER_AREA``, TensorFlow's ``AREA``, what the ``mtcnn`` package resizes with) reads
every source pixel once per level however small the level: ten levels of a 640×480 photo cost OpenCV 7 ms,
the small ones as much as the large. A level's pixel is the mean of the source over its cell, so it is four
reads of the table of sums interpolated at the cell's corners (the table of a piecewise-constant image is
bilinear between its grid points): the table is built once (0.2 ms), each level then costs its own size.
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
    table = cv2.integral(rgb, sdepth=table_depth(rgb.shape))
    if table.ndim == 2:
        table = table[..., None]
    levels = []
    for height, width in sizes:
        level = np.empty((height, width, table.shape[2]), np.float32)
        _compiled_cells(table, level)
        levels.append(level)
    return levels


def table_depth(shape: tuple[int, ...]) -> int:
    """32-bit integer sums where the whole photo's sum fits (exact, and half the memory to read per level:
    the levels are bound by reading the table), else float64.

    >>> table_depth((480, 640, 3)) == cv2.CV_32S, table_depth((3000, 4000, 3)) == cv2.CV_64F
    (True, True)
    """
    return cv2.CV_32S if shape[0] * shape[1] * 255 < 2**31 else cv2.CV_64F


def compile_kernels() -> None:
    """Has numba compile the kernel (or read its cache) for both kinds of table now, not on a photo."""
    if _compiled_cells is not None:
        for depth in (np.int32, np.float64):
            _compiled_cells(np.zeros((3, 3, 3), depth), np.empty((1, 1, 3), np.float32))


def _average_cells(table: np.ndarray, out: np.ndarray) -> None:
    """Fills ``out`` (height × width × channels) with the cell means of the photo whose table of sums is ``table``.

    The table is interpolated at each cell corner, row boundary by row boundary; channels are flattened into
    each row (``points``: every column boundary of every channel) so the loops run over contiguous memory.
    """
    rows_in, columns_in, channels = table.shape
    source_h, source_w = rows_in - 1, columns_in - 1
    height, width, _ = out.shape
    step_y, step_x = source_h / height, source_w / width
    inverse_area = 1.0 / (step_y * step_x)
    points = (width + 1) * channels
    first = np.empty(points, np.int64)  # a point's left table column, flattened with its channel
    frac_x = np.empty(points)
    for k in range(width + 1):
        position = k * step_x
        x = min(int(position), source_w - 1)
        for c in range(channels):
            first[k * channels + c] = x * channels + c
            frac_x[k * channels + c] = position - x
    flat = table.reshape(rows_in, columns_in * channels)
    previous = np.empty(points)
    current = np.empty(points)
    cells = width * channels
    for row in range(height + 1):
        position = row * step_y
        top = min(int(position), source_h - 1)
        frac_y = position - top
        upper, lower = flat[top], flat[top + 1]
        for j in range(points):
            i = first[j]
            left = upper[i] + frac_y * (lower[i] - upper[i])
            right = upper[i + channels] + frac_y * (lower[i + channels] - upper[i + channels])
            current[j] = left + frac_x[j] * (right - left)
        if row > 0:
            target = out[row - 1].reshape(cells)
            for j in range(cells):
                target[j] = (current[j + channels] - current[j] - previous[j + channels] + previous[j]) * inverse_area
        previous, current = current, previous


_compiled_cells = host_kernel(_average_cells)
