"""The corrections stage on the CPU as one numba pass: cast, dark, offset, gain, threshold
and zeroed bad pixels written once into the float32 tile (numpy's version makes a pass per
operation). Imported on first use (numba)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

__all__ = ["correct_tile"]


@numba.njit(cache=True, parallel=True, nogil=True)
def correct_tile(tile: np.ndarray, dark: np.ndarray, gain: np.ndarray, offset: float,
                 threshold: float, bad: np.ndarray, out: np.ndarray) -> None:
    """``out[f] = (tile[f] - dark - offset) * gain``, below ``threshold`` to 0, ``bad``
    (flat indices) to 0.

    ``tile`` (n, h, w) any real dtype (a crop view is fine); ``dark``/``gain`` (h, w) float32
    (zeros / ones when unset); ``threshold`` -inf when unset; ``out`` (n, h, w) float32.
    """
    n, h, w = tile.shape
    for f in prange(n):
        src, dst = tile[f], out[f]
        for i in range(h):
            for j in range(w):
                v = (np.float32(src[i, j]) - dark[i, j] - np.float32(offset)) * gain[i, j]
                dst[i, j] = v if v >= threshold else np.float32(0.0)
        flat = dst.reshape(h * w)
        for b in range(bad.shape[0]):
            flat[bad[b]] = 0.0
