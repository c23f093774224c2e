"""The charge cloud of one electron, as the fit counter models it: a 2D Gaussian of std
``blur`` px integrated over each pixel, tabulated in 1/128 px steps of its centre's offset
from a pixel centre (no erf or exp per pixel), and its least-squares fit to a 5x5 window.
Used by :mod:`framescope.counting._peel`."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["profile_table"]

_JIT = {"cache": True, "nogil": True}
_R = 2  # half-width of the fit and model window
_Q = 128  # profile table steps per px
_STEP = 0.005  # px: Gauss-Newton stops at a smaller step


def profile_table(blur: float) -> np.ndarray:
    """``(2 _Q + 1, 3, 5)``: for offsets ``t = -1 .. 1`` px in steps of ``1 / _Q``, the
    charge fraction ``f`` of a unit cloud of std ``blur`` in the pixels ``-2 .. 2`` of the
    window (``[:, 0]``), its derivative ``g`` in ``t`` (``[:, 1]``) and the sums of ``f f``,
    ``f g``, ``g g`` (``[:, 2, :3]``)."""
    t = np.linspace(-1.0, 1.0, 2 * _Q + 1)[:, None]
    edge = np.arange(-_R, _R + 2) - 0.5 - t  # pixel edges relative to the centre
    cdf = 0.5 * np.vectorize(math.erf)(edge / (blur * math.sqrt(2.0)))
    pdf = np.exp(-0.5 * (edge / blur) ** 2) / (blur * math.sqrt(2 * math.pi))
    f, g = np.diff(cdf, axis=1), -np.diff(pdf, axis=1)
    sums = np.zeros_like(f)
    sums[:, :3] = np.stack([(f * f).sum(1), (f * g).sum(1), (g * g).sum(1)], axis=1)
    return np.ascontiguousarray(np.stack([f, g, sums], axis=1))


@numba.njit(inline="always", **_JIT)
def _q(t):  # pragma: no cover - compiled
    """Row of the profile table nearest offset ``t``."""
    return min(max(int((t + 1.0) * _Q + 0.5), 0), 2 * _Q)


@numba.njit(**_JIT)
def _fit(r, wt, tab, cy, cx, q, ty, tx, pr):  # pragma: no cover - compiled
    """Amplitude and offsets ``(a, ty, tx)`` of one cloud fitted to the 5x5 window of ``r``
    around ``(cy, cx)`` plus ``q`` clouds at offsets ``(ty, tx)``, started there (NaN: at
    the 3x3 centroid); the offsets stay within 1 px. The window (data, weights) is left in
    ``pr[0:5]``, ``pr[5:10]``."""
    full = True
    fy, fx = tab[_q(ty), 0], tab[_q(tx), 0]
    for a in range(2 * _R + 1):
        for b in range(2 * _R + 1):
            w = wt[cy + a - _R, cx + b - _R]
            pr[a, b] = r[cy + a - _R, cx + b - _R] + (q * fy[a] * fx[b] * w if q else 0.0)
            pr[a + 5, b] = w
            full &= w == 1.0
    if math.isnan(ty):
        s = sy = sx = 0.0
        for a in range(-1, 2):
            for b in range(-1, 2):
                q = max(pr[a + _R, b + _R], 0.0)
                s, sy, sx = s + q, sy + a * q, sx + b * q
        ty = sy / s if s > 0 else 0.0
        tx = sx / s if s > 0 else 0.0
    amp = 0.0
    u, v = pr[10], pr[11]
    for _ in range(3):
        iy, ix = _q(ty), _q(tx)
        fy, gy, fx, gx = tab[iy, 0], tab[iy, 1], tab[ix, 0], tab[ix, 1]
        if full:
            # separable model: the sums factor into 1D dot products
            for a in range(2 * _R + 1):
                u[a] = v[a] = 0.0
                for b in range(2 * _R + 1):
                    u[a], v[a] = u[a] + pr[a, b] * fx[b], v[a] + pr[a, b] * gx[b]
            ba = by = bx = 0.0
            for a in range(2 * _R + 1):
                ba, by, bx = ba + fy[a] * u[a], by + gy[a] * u[a], bx + fy[a] * v[a]
            sy, sx = tab[iy, 2], tab[ix, 2]  # sums of f f, f g and g g
            haa, hay, hax = sy[0] * sx[0], sy[1] * sx[0], sy[0] * sx[1]
            hyy, hyx, hxx = sy[2] * sx[0], sy[1] * sx[1], sy[0] * sx[2]
        else:
            haa = hay = hax = hyy = hyx = hxx = ba = by = bx = 0.0
            for a in range(2 * _R + 1):
                for b in range(2 * _R + 1):
                    w = pr[a + 5, b]
                    d = pr[a, b]
                    m, jy, jx = fy[a] * fx[b] * w, gy[a] * fx[b] * w, fy[a] * gx[b] * w
                    haa, hay, hax = haa + m * m, hay + m * jy, hax + m * jx
                    hyy, hyx, hxx = hyy + jy * jy, hyx + jy * jx, hxx + jx * jx
                    ba, by, bx = ba + m * d, by + jy * d, bx + jx * d
        if haa <= 0.0:
            return 0.0, ty, tx
        amp = ba / haa
        if amp <= 0.0:
            break
        gyv = by - amp * hay
        gxv = bx - amp * hax
        det = amp * (hyy * hxx - hyx * hyx)
        if det <= 0.0:
            break
        dy = min(max((hxx * gyv - hyx * gxv) / det, -0.5), 0.5)
        dx = min(max((hyy * gxv - hyx * gyv) / det, -0.5), 0.5)
        ty = min(max(ty + dy, -1.0), 1.0)
        tx = min(max(tx + dx, -1.0), 1.0)
        if abs(dy) < _STEP and abs(dx) < _STEP:
            break
    return amp, ty, tx


@numba.njit(**_JIT)
def _add(r, s3, wt, tab, el, k, q, pr, with_s3=False):  # pragma: no cover - compiled
    """``r += q *`` electron ``k``'s cloud (none where the weight is 0); also into the 3x3
    sums ``s3`` if ``with_s3``."""
    cy, cx = int(el[k, 0]), int(el[k, 1])
    iy, ix = _q(el[k, 2]), _q(el[k, 3])
    fy, fx = tab[iy, 0], tab[ix, 0]
    for a in range(2 * _R + 1):
        i = cy + a - _R
        for b in range(2 * _R + 1):
            j = cx + b - _R
            v = np.float32(q * fy[a] * fx[b] * wt[i, j])
            r[i, j] += v
            if with_s3:
                for e in range(-1, 2):
                    for f in range(-1, 2):
                        s3[i + e, j + f] += v
