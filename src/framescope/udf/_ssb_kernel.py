"""The numba kernel of :class:`~framescope.udf.SSB`: per-frame phase factors, summed.

Imported on first use (see :class:`~framescope.udf._kernels.LazyKernel`), not by
``import framescope``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

__all__ = ["accumulate_spectrum"]

_BLOCK = 512  # scan frequencies per parallel block: its accumulators stay in L1


@numba.njit(cache=True, parallel=True, fastmath=True, nogil=True)
def accumulate_spectrum(t, ys, xs, ey_re, ey_im, ex_re, ex_im, out):  # pragma: no cover
    """``out[q] += sum_f (t[f, q] + 1j t[f, n_q + q]) * ey[ys[f], q] * ex[xs[f], q]``.

    ``t`` (n, 2 n_q) float32 holds each frame's product with the real and imaginary
    weights; ``ey``/``ex`` hold ``exp(-2 pi i f y)`` per scan row / column and frequency,
    so the phase factor of a position is one complex product (no exp per frame).
    Accumulates in float64; frequencies are split into blocks run in parallel.
    """
    n = t.shape[0]
    nq = out.shape[0]
    blocks = (nq + _BLOCK - 1) // _BLOCK
    for bi in prange(blocks):
        lo = bi * _BLOCK
        hi = min(nq, lo + _BLOCK)
        acc_re = np.zeros(hi - lo)
        acc_im = np.zeros(hi - lo)
        for f in range(n):
            y = ys[f]
            x = xs[f]
            for j in range(hi - lo):
                q = lo + j
                er = ey_re[y, q] * ex_re[x, q] - ey_im[y, q] * ex_im[x, q]
                ei = ey_re[y, q] * ex_im[x, q] + ey_im[y, q] * ex_re[x, q]
                a = t[f, q]
                b = t[f, nq + q]
                acc_re[j] += a * er - b * ei
                acc_im[j] += a * ei + b * er
        for j in range(hi - lo):
            out[lo + j] += complex(acc_re[j], acc_im[j])
