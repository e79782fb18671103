"""A 64-bit DCT perceptual hash (pHash) and the Hamming distance between two of them.

The image is reduced to 32×32 grey, its 2-D DCT taken, and each of the 8×8 lowest frequencies (the DC
term included) compared with their median: one bit each. Resizing, re-encoding, a few per cent of crop
and small colour changes move few of these coarse frequencies across the median; a different photo
flips about half of the bits.
"""

from __future__ import annotations

import cv2
import numpy as np

HASH_BITS = 64
REDUCED_SIZE = 32
LOW_FREQUENCIES = 8


def perceptual_hash(rgb: np.ndarray) -> int:
    """The 64-bit pHash of an HxW, HxWx3 or HxWx4 uint8 image, as a signed int64 (a database BIGINT).

    Example:
        >>> from skimage import data
        >>> hamming(perceptual_hash(data.chelsea()), perceptual_hash(data.chelsea()[5:-5, 5:-5]))
        2
    """
    grey = _grey(rgb)
    small = cv2.resize(grey, (REDUCED_SIZE, REDUCED_SIZE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small.astype(np.float32))[:LOW_FREQUENCIES, :LOW_FREQUENCIES].ravel()
    bits = low > np.median(low)
    unsigned = int(np.packbits(bits).view(">u8")[0])
    return unsigned - (1 << HASH_BITS) if unsigned >= 1 << (HASH_BITS - 1) else unsigned


def hamming(a: int, b: int) -> int:
    """How many of the 64 bits differ between two hashes."""
    return ((a ^ b) & ((1 << HASH_BITS) - 1)).bit_count()


def hamming_to_many(hash_: int, hashes: np.ndarray) -> np.ndarray:
    """Distances from ``hash_`` to every hash in an int64 array, as uint8."""
    return np.bitwise_count(np.bitwise_xor(hashes, np.int64(hash_)).view(np.uint64)).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"expected a non-empty uint8 image, got {image.dtype} of shape {image.shape}")
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
