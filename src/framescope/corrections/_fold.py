"""Linear corrections folded into linear analyses: a virtual detector ``M`` on corrected
frames equals a weighted detector ``W`` on the raw frames minus a constant ``b``.

With ``y = B F G (C x - D - o)`` (crop ``C``, dark ``D``, offset ``o``, gain ``G``, bad-pixel
fill ``F``, binning ``B``; all linear), ``<M, y> = <W, x> - b`` where ``v = G Fᵀ Bᵀ M``,
``W = Cᵀ v`` and ``b = <v, D + o>``. The analysis then reads the raw frames as they are (the
fused integer kernels, only the pixels a detector covers) instead of a corrected float copy
of every tile. A threshold is not linear: nothing is folded then. FFT downsampling is linear
(separable, ``R x = A_y x A_xᵀ``) but dense: a folded ring weighs every raw pixel a little.
Measured on 256 x 256 frames, such dense weights ran at 425 frames/s in ``ApplyMasks``
against 616 frames/s for the stage's FFT, so it is not folded and the stage runs.
"""

from __future__ import annotations

import numpy as np

from framescope.corrections._apply import _neighbours
from framescope.corrections._model import Corrections

__all__ = ["fold_masks"]


def fold_masks(corrections: Corrections, masks: np.ndarray, raw_shape: tuple[int, int],
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """Weights on the raw frames and constants for ``masks`` on the corrected ones.

    Parameters
    ----------
    masks : ndarray (k, h_out, w_out)
        Detector masks on the corrected frames.
    raw_shape : (int, int)

    Returns
    -------
    (weights (k, h_raw, w_raw) float32, constants (k,) float64), or None when the
    corrections are not linear (a threshold) or not folded (FFT downsampling).
    """
    c = corrections
    if c.threshold is not None or c.fft_downsample is not None:
        return None
    v = np.array(masks, dtype=np.float64)  # a copy: the weights are changed in place
    k = c.bin
    if k > 1:  # Bᵀ: a binned pixel's weight on each of its k x k pixels
        v = np.repeat(np.repeat(v, k, axis=1), k, axis=2)
    sl: tuple[slice, slice] = (slice(None), slice(None))
    if c.crop is not None:
        y0, y1, x0, x1 = c.crop
        sl = (slice(y0, y1), slice(x0, x1))
    n, h, w = v.shape
    if c.bad is not None and c.bad[sl].any():
        bad = c.bad[sl]
        flat = v.reshape(n, -1)
        if c.bad_fill == "neighbours":  # Fᵀ: a bad pixel's weight goes to its neighbours
            where, idx, wts = _neighbours(bad)
            moved = flat[:, where, None] * wts[None]  # (n, bad, 8)
            for i in range(n):
                np.add.at(flat[i], idx.ravel(), moved[i].ravel())
        flat[:, np.flatnonzero(bad)] = 0
    if c.gain is not None:
        v = v * c.gain[sl]
    shift = np.full((h, w), c.offset)
    if c.dark is not None:
        shift = shift + c.dark[sl]
    constants = (v * shift).sum(axis=(1, 2))
    weights = np.zeros((n, *raw_shape), np.float32)
    weights[(slice(None), *sl)] = v
    return weights, constants
