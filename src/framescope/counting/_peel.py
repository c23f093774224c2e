"""Pile-up-aware electron counting by fitting and subtracting charge clouds ("peeling").

One electron is modelled as a 2D Gaussian cloud of std ``blur`` px integrated over each
pixel, carrying on average ``electron`` ADU. Per frame, in zero-padded float32 buffers:

1.  ``r = (frame - dark) * gain``; pixels above ``xray`` and all within 2 px of them (and
    bad pixels) get weight and residual 0: nothing is detected, fitted or subtracted there.
2.  Detection: the peaks of the 3x3 sums of ``r`` (a near-matched filter) above half an
    electron (halved on the two outer rows and columns, where up to half a cloud lies
    outside), brightest first while still peaks, are fitted; an electron is stored at the
    fitted position and ONE mean cloud subtracted, so a pile-up of two leaves the second in
    the residual for a later pass or the split test.
3.  Refinement: electrons with another within 3 px are refitted one at a time with their
    own cloud put back - coordinate descent on their joint least squares, which moves a
    merged pair apart. Only new electrons, their neighbours and the neighbours of one that
    moved over 0.03 px are refitted, at most 12 times each per pass. This is most of the
    cost: at 0.1 e-/px nearly every electron has a neighbour within 3 px.
4.  Split test: an electron fitted with over 1.1 electrons' charge (1.35 if alone) is
    replaced by two along the long axis of its charge's second moments, kept if the squared
    residual of its 7x7 window falls. Prune test: one under 0.9 is removed if the squared
    residual within 5 px (neighbours refitted) rises by under 0.0078 electron^2.
5.  Steps 2-4 repeat until a detection adds nothing (at most 6 passes).

The fit: Gauss-Newton for the position on the 5x5 window (from the 3x3 centroid), the
amplitude solved exactly at each step; profiles from a table in 1/128 px steps (no erf or
exp per pixel). The model is separable, so a window without left-out pixels needs 50
multiply-adds per step. The 3x3 sums are kept only while detecting, recomputed per pass.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from framescope.counting._cloud import _R, _add, _fit, _q, profile_table
from framescope.counting._counted import CountingError
from framescope.counting._kernel import in_groups

__all__ = ["fit_response", "peel_block"]

_RESPONSE = {"electron": "mean signal of one electron, ADU",
             "blur": "standard deviation of its charge cloud, px"}

_JIT = {"cache": True, "nogil": True}
_P = 6  # padding of the work buffers, px (the prune window reaches 5 px out)
_NEAR = 3  # electrons closer than this (Chebyshev, px) are refined jointly
# tuned on framescope.datasets.lowdose, in electrons (steps 2-4; the margin in their square)
_T_DET, _T_AMP, _T_SPLIT, _T_ALONE, _T_PRUNE, _PRUNE_MARGIN = 0.5, 0.5, 1.1, 1.35, 0.9, 0.0078
_MOVE = 0.03  # px: a smaller move does not disturb the neighbours' fits
_MAX_PASSES = 6
_SPLIT_ROUNDS = 2
_MAX_REFITS = 12  # per electron and pass: coordinate descent of a close pair is slow


@numba.njit(**_JIT)
def _unlink(head, nxt, el, k, ww):  # pragma: no cover - compiled
    """Take electron ``k`` out of its pixel's list (``head``: first electron per padded
    pixel, ``nxt``: the next one)."""
    p = int(el[k, 0]) * ww + int(el[k, 1])
    if head[p] == k:
        head[p] = nxt[k]
        return
    j = head[p]
    while nxt[j] != k:
        j = nxt[j]
    nxt[j] = nxt[k]


@numba.njit(**_JIT)
def _place(wt, el, k, cy, cx, ty, tx, amp, h, w, head, nxt, ww):  # pragma: no cover - compiled
    """Store electron ``k`` at padded pixel ``(cy, cx)`` + offsets, re-centred on its nearest
    pixel inside the frame and not left out, and link it there (``k`` must be unlinked)."""
    ny = min(max(cy + math.floor(ty + 0.5), _P), h + _P - 1)
    nx = min(max(cx + math.floor(tx + 0.5), _P), w + _P - 1)
    if wt[ny, nx] == 0.0:  # never into a left-out pixel (X-ray margin, bad pixel)
        ny, nx = cy, cx
        ty, tx = min(max(ty, -0.5), 0.5), min(max(tx, -0.5), 0.5)
    el[k, 0], el[k, 1], el[k, 4] = ny, nx, amp
    el[k, 2] = min(max(cy + ty - ny, -1.0), 1.0)
    el[k, 3] = min(max(cx + tx - nx, -1.0), 1.0)
    nxt[k] = head[ny * ww + nx]
    head[ny * ww + nx] = k


@numba.njit(**_JIT)
def _near(el, k, head, nxt, ww, reach, nb):  # pragma: no cover - compiled
    """The other electrons within ``reach`` px (Chebyshev) of ``k``'s pixel into ``nb``;
    their number (at most ``len(nb)``)."""
    cy, cx = int(el[k, 0]), int(el[k, 1])
    m = 0
    for i in range(cy - reach, cy + reach + 1):
        for j in range(cx - reach, cx + reach + 1):
            e = head[i * ww + j]
            while e >= 0:
                if e != k and m < nb.shape[0]:
                    nb[m] = e
                    m += 1
                e = nxt[e]
    return m


@numba.njit(**_JIT)
def _refit(st, k):  # pragma: no cover - compiled
    """Refit electron ``k`` in the residual with its own cloud put back; how far it moved
    (px). Works on a copy of its window; the residual is written back once."""
    r, s3, wt, tab, el, head, nxt, pr, gain, h, w = st
    ww = w + 2 * _P
    cy, cx = int(el[k, 0]), int(el[k, 1])
    oy, ox = el[k, 2], el[k, 3]
    amp, ty, tx = _fit(r, wt, tab, cy, cx, gain, oy, ox, pr)
    _unlink(head, nxt, el, k, ww)
    _place(wt, el, k, cy, cx, ty, tx, amp, h, w, head, nxt, ww)
    same = int(el[k, 0]) == cy and int(el[k, 1]) == cx
    fy, fx = tab[_q(el[k, 2]), 0], tab[_q(el[k, 3]), 0]
    for a in range(2 * _R + 1):
        for b in range(2 * _R + 1):
            v = pr[a, b]
            if same:
                v -= gain * fy[a] * fx[b] * pr[a + 5, b]
            r[cy + a - _R, cx + b - _R] = v
    if not same:
        _add(r, s3, wt, tab, el, k, -gain, pr)
    return max(abs(el[k, 0] + el[k, 2] - cy - oy), abs(el[k, 1] + el[k, 3] - cx - ox))


@numba.njit(**_JIT)
def _candidate(s3, wt, thr, i, j, h, w):  # pragma: no cover - compiled
    """Is padded pixel ``(i, j)`` a detection candidate: a peak of ``s3`` above ``thr``,
    halved on each of the two outer rows or columns (up to half a cloud lies outside)?"""
    t = thr
    if i <= _P + 1 or i >= h + _P - 2:
        t *= 0.5
    if j <= _P + 1 or j >= w + _P - 2:
        t *= 0.5
    v = s3[i, j]  # a peak: ties to the first in raster order
    return (v > t and wt[i, j] > 0.0 and v > s3[i - 1, j - 1] and v > s3[i - 1, j]
            and v > s3[i - 1, j + 1] and v > s3[i, j - 1] and v >= s3[i, j + 1]
            and v >= s3[i + 1, j - 1] and v >= s3[i + 1, j] and v >= s3[i + 1, j + 1])


@numba.njit(**_JIT)
def _detect(st, n, cap, cand, vals, stack, sn, queued, nb):  # pragma: no cover - compiled
    """Step 2: electrons ``n, n + 1, ...`` at the peaks of the residual's 3x3 sums, brightest
    first; they and their neighbours go onto the refinement ``stack``. Returns the new
    ``n`` and stack size."""
    r, s3, wt, tab, el, head, nxt, pr, gain, h, w = st
    ww = w + 2 * _P
    thr = np.float32(_T_DET * gain)
    nc = 0
    for i in range(_P, h + _P):
        for j in range(_P, w + _P):
            if s3[i, j] > 0.25 * thr and _candidate(s3, wt, thr, i, j, h, w):
                cand[nc] = i * ww + j
                vals[nc] = -s3[i, j]
                nc += 1
    for o in np.argsort(vals[:nc]):
        cy, cx = cand[o] // ww, cand[o] % ww
        if n >= cap or not _candidate(s3, wt, thr, cy, cx, h, w):
            continue  # taken by an earlier subtraction
        amp, ty, tx = _fit(r, wt, tab, cy, cx, 0.0, math.nan, 0.0, pr)
        if amp < _T_AMP * gain:
            continue  # too little charge for an electron (near the border, noise)
        _place(wt, el, n, cy, cx, ty, tx, amp, h, w, head, nxt, ww)
        _add(r, s3, wt, tab, el, n, -gain, pr, True)
        sn = _queue(el, n, head, nxt, ww, stack, sn, queued, nb)
        n += 1
    return n, sn


@numba.njit(**_JIT)
def _queue(el, k, head, nxt, ww, stack, sn, queued, nb, me=True):  # pragma: no cover - compiled
    """Put ``k`` (if ``me``) and its neighbours on the refinement stack (once); the new
    stack size."""
    m = _near(el, k, head, nxt, ww, _NEAR, nb)
    for a in range(-1 if me else 0, m):
        e = k if a < 0 else nb[a]
        if not queued[e]:
            queued[e] = True
            stack[sn] = e
            sn += 1
    return sn


@numba.njit(**_JIT)
def _refine(st, stack, sn, queued, tested, nb, nfit):  # pragma: no cover - compiled
    """Step 3: refit the crowded electrons of the stack until none moves more than _MOVE
    (at most _MAX_REFITS times each); a refitted electron is due for the tests again."""
    el, head, nxt, w = st[4], st[5], st[6], st[10]
    while sn > 0:
        sn -= 1
        k = stack[sn]
        queued[k] = False
        if nfit[k] >= _MAX_REFITS or _near(el, k, head, nxt, w + 2 * _P, _NEAR, nb) == 0:
            continue  # alone: its detection fit stands
        nfit[k] += 1
        tested[k] = 0
        if _refit(st, k) > _MOVE:
            sn = _queue(el, k, head, nxt, w + 2 * _P, stack, sn, queued, nb, False)
    return sn


@numba.njit(**_JIT)
def _ssr(r, wt, cy, cx, half):  # pragma: no cover - compiled
    """Sum of squared residuals within ``half`` px (Chebyshev) of ``(cy, cx)``."""
    s = 0.0
    for i in range(cy - half, cy + half + 1):
        for j in range(cx - half, cx + half + 1):
            s += wt[i, j] * np.float64(r[i, j]) ** 2
    return s


@numba.njit(**_JIT)
def _split(st, k, n, blur):  # pragma: no cover - compiled
    """Step 4: is electron ``k`` two? Replaced by ``k`` and ``n`` started symmetrically
    about it along the long axis of its charge's second moments, fitted in turn, kept if
    the squared residual of the 7x7 window falls, else ``k`` is restored."""
    r, s3, wt, tab, el, head, nxt, pr, gain, h, w = st
    ww = w + 2 * _P
    cy, cx = int(el[k, 0]), int(el[k, 1])
    before = _ssr(r, wt, cy, cx, _R + 1)
    oy, ox, oa = el[k, 2], el[k, 3], el[k, 4]
    _add(r, s3, wt, tab, el, k, gain, pr)
    s = syy = sxx = sxy = 0.0
    for a in range(-_R, _R + 1):
        for b in range(-_R, _R + 1):
            q = max(np.float64(r[cy + a, cx + b]) * wt[cy + a, cx + b], 0.0)
            dy, dx = a - oy, b - ox
            s, syy, sxx, sxy = s + q, syy + q * dy * dy, sxx + q * dx * dx, sxy + q * dy * dx
    if s <= 0.0:
        _add(r, s3, wt, tab, el, k, -gain, pr)
        return False
    syy, sxx, sxy = syy / s, sxx / s, sxy / s
    lam = 0.5 * (syy + sxx) + math.sqrt(0.25 * (syy - sxx) ** 2 + sxy * sxy)
    ey, ex = sxy, lam - syy  # eigenvector of the largest eigenvalue
    if abs(ey) + abs(ex) < 1e-9:
        ey, ex = (1.0, 0.0) if syy >= sxx else (0.0, 1.0)
    nrm = math.sqrt(ey * ey + ex * ex)
    # half the separation: what the spread beyond one cloud's (and a pixel's) suggests
    half = min(max(math.sqrt(max(lam - blur * blur - 1.0 / 12.0, 0.0)), 0.25), 1.0)
    ey, ex = half * ey / nrm, half * ex / nrm
    _unlink(head, nxt, el, k, ww)
    _place(wt, el, k, cy, cx, oy + ey, ox + ex, 0.0, h, w, head, nxt, ww)
    _place(wt, el, n, cy, cx, oy - ey, ox - ex, 0.0, h, w, head, nxt, ww)
    _add(r, s3, wt, tab, el, k, -gain, pr)
    _add(r, s3, wt, tab, el, n, -gain, pr)
    for _ in range(_SPLIT_ROUNDS):
        _refit(st, k)
        _refit(st, n)
    if _ssr(r, wt, cy, cx, _R + 1) < before:
        return True
    _add(r, s3, wt, tab, el, n, gain, pr)
    _unlink(head, nxt, el, n, ww)
    _add(r, s3, wt, tab, el, k, gain, pr)
    _unlink(head, nxt, el, k, ww)
    _place(wt, el, k, cy, cx, oy, ox, oa, h, w, head, nxt, ww)
    _add(r, s3, wt, tab, el, k, -gain, pr)
    return False


@numba.njit(**_JIT)
def _prune(st, k, nb, saved):  # pragma: no cover - compiled
    """Step 4: take out electron ``k``, refit its neighbours within 2 px twice; keep that if
    the squared residual within 5 px rose by less than the margin, else restore all."""
    r, s3, wt, tab, el, head, nxt, pr, gain, h, w = st
    ww = w + 2 * _P
    cy, cx = int(el[k, 0]), int(el[k, 1])
    m = min(_near(el, k, head, nxt, ww, 2, nb), saved.shape[0])
    for a in range(m):
        saved[a] = el[nb[a]]
    before = _ssr(r, wt, cy, cx, 5)
    _add(r, s3, wt, tab, el, k, gain, pr)
    for _ in range(2 if m else 0):
        for a in range(m):
            _refit(st, nb[a])
    if _ssr(r, wt, cy, cx, 5) <= before + _PRUNE_MARGIN * gain * gain:
        _unlink(head, nxt, el, k, ww)
        el[k, 4] = -1.0  # dead
        return True
    for a in range(m):
        e = nb[a]
        _add(r, s3, wt, tab, el, e, gain, pr)
        _unlink(head, nxt, el, e, ww)
        _place(wt, el, e, int(saved[a, 0]), int(saved[a, 1]), saved[a, 2], saved[a, 3],
               saved[a, 4], h, w, head, nxt, ww)
        _add(r, s3, wt, tab, el, e, -gain, pr)
    _add(r, s3, wt, tab, el, k, -gain, pr)
    return False


@numba.njit(**_JIT)
def _box3(r, s3):  # pragma: no cover - compiled
    """3x3 sums of ``r`` into ``s3`` (the outermost rows and columns keep theirs: 0)."""
    for y in range(1, r.shape[0] - 1):
        for x in range(1, r.shape[1] - 1):
            s3[y, x] = (r[y - 1, x - 1] + r[y - 1, x] + r[y - 1, x + 1] + r[y, x - 1]
                        + r[y, x] + r[y, x + 1] + r[y + 1, x - 1] + r[y + 1, x]
                        + r[y + 1, x + 1])


@numba.njit(**_JIT)
def _peel_frame(frame, dark, gmap, tab, gain, blur, xray, indices, cents,
                with_c):  # pragma: no cover - compiled
    """Electrons of one frame into ``indices`` (flat pixel, raster order) and ``cents``
    (fitted ``(y, x)``); their number (at most ``len(indices)``)."""
    h, w = frame.shape
    hh, ww = h + 2 * _P, w + 2 * _P
    work = np.zeros((3, hh, ww), dtype=np.float32)
    r, s3, wt = work[0], work[1], work[2]
    for y in range(h):
        for x in range(w):
            v = np.float32(frame[y, x]) - dark[y, x]
            if gmap is not None:
                v *= gmap[y, x]
            r[y + _P, x + _P] = v
            wt[y + _P, x + _P] = gmap is None or gmap[y, x] != 0  # bad pixels: no data
    # X-rays: weight and residual 0 within 2 px of a pixel above the threshold (marked
    # -1 first, so that a blanked X-ray pixel still blanks its own margin)
    for y in range(_P, h + _P):
        for x in range(_P, w + _P):
            if r[y, x] > np.float32(xray) and wt[y, x] != 0.0:
                wt[max(y - 2, _P):min(y + 3, h + _P), max(x - 2, _P):min(x + 3, w + _P)] = -1
    for y in range(_P, h + _P):
        for x in range(_P, w + _P):
            if wt[y, x] < 0.0:
                wt[y, x] = r[y, x] = 0.0
    cap = indices.shape[0]
    el = np.empty((cap, 5))  # padded pixel y, x, offsets y, x, amplitude (< 0: removed)
    head = np.full(hh * ww, -1, dtype=np.int64)
    nxt = np.empty(cap, dtype=np.int64)
    pr = np.zeros((12, 2 * _R + 1))
    st = (r, s3, wt, tab, el, head, nxt, pr, gain, h, w)
    cand = np.empty(h * w, dtype=np.int64)
    vals = np.empty(h * w, dtype=np.float32)
    stack = np.empty(cap, dtype=np.int64)
    queued = np.zeros(cap, dtype=np.bool_)
    tested = np.zeros(cap, dtype=np.uint8)  # 1: split test done, 2: prune test done
    nfit = np.zeros(cap, dtype=np.int64)
    nb = np.empty(64, dtype=np.int64)
    saved = np.empty((64, 5))
    n = 0
    for _pass in range(_MAX_PASSES):
        n0 = n
        _box3(r, s3)  # the refinements below leave s3 behind
        n, sn = _detect(st, n, cap, cand, vals, stack, 0, queued, nb)
        nfit[:n] = 0
        if n == n0:
            break
        for _round in range(8):
            sn = _refine(st, stack, sn, queued, tested, nb, nfit)
            split = False
            for k in range(n):
                if tested[k] & 1 or el[k, 4] < _T_SPLIT * gain or n >= cap:
                    continue
                tested[k] |= 1
                alone = _near(el, k, head, nxt, ww, _NEAR, nb) == 0
                if alone and el[k, 4] < _T_ALONE * gain:
                    continue
                if _split(st, k, n, blur):
                    tested[n] = 0
                    queued[n] = False
                    for e in (k, n):
                        sn = _queue(el, e, head, nxt, ww, stack, sn, queued, nb)
                    n += 1
                    split = True
            if not split:
                break
        for k in range(n):
            if tested[k] & 2 or el[k, 4] < 0.0 or el[k, 4] >= _T_PRUNE * gain:
                continue
            tested[k] |= 2
            _prune(st, k, nb, saved)

    el = el[:n][el[:n, 4] >= 0.0]
    m = el.shape[0]
    flat = (el[:, 0].astype(np.int64) - _P) * w + el[:, 1].astype(np.int64) - _P
    order = np.argsort(flat, kind="mergesort")
    for a in range(m):
        k = order[a]
        indices[a] = flat[k]
        if with_c:
            cents[a, 0] = el[k, 0] - _P + el[k, 2]
            cents[a, 1] = el[k, 1] - _P + el[k, 3]
    return m


@numba.njit(parallel=True, **_JIT)
def _peel_group(frames, dark, gmap, tab, gain, blur, xray, scratch, scratch_c, counts,
                with_c):  # pragma: no cover - compiled
    for i in prange(frames.shape[0]):
        counts[i] = _peel_frame(frames[i], dark, gmap, tab, gain, blur, xray, scratch[i],
                                scratch_c[i], with_c)


def peel_block(
    frames: np.ndarray,
    dark: np.ndarray,
    gain_map: np.ndarray | None,
    *,
    electron: float,
    blur: float,
    xray: float,
    centroids: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Electrons of a block of frames by fitting and subtracting charge clouds.

    Parameters
    ----------
    frames, dark, gain_map, centroids
        As for :func:`framescope.counting._kernel.count_block` (``gain_map`` may be None;
        its pixels at 0, bad, are left out of the fits).
    electron, blur : float
        Mean charge of one electron (ADU of the corrected values), std of its cloud (px).
    xray : float
        Pixels above this and all within 2 px of them are left out.

    Returns
    -------
    counts : ndarray of int64, shape (n,)
        Electrons per frame.
    indices : ndarray of uint32, shape (counts.sum(),)
        Flat pixel index of each electron's fitted position, frame after frame, each
        frame's in raster order; a pixel holding two electrons appears twice.
    centroids : ndarray of float32, shape (counts.sum(), 2) or None
        Fitted ``(y, x)`` of each electron in detector px (pixel centres on integers).
    """
    n, h, w = frames.shape
    if h * w > 2**32:
        raise ValueError(f"frames of {h}x{w} px do not fit uint32 pixel indices")
    cap = h * w  # more electrons than pixels would need a far lower threshold
    tab = profile_table(float(blur))
    return in_groups(n, cap, centroids, lambda g0, g1, scratch, scratch_c, counts: _peel_group(
        frames[g0:g1], dark, gain_map, tab, float(electron), float(blur), float(xray),
        scratch, scratch_c, counts, bool(centroids)))


def fit_response(caller: str, method: str, electron: float | None,
                 blur: float | None) -> tuple[float, float] | None:
    """``(electron, blur)`` for ``method="fit"``, None for ``"maxima"``; checked, errors
    naming ``caller``."""
    if method not in ("maxima", "fit"):
        raise CountingError(f"{caller}: method must be 'maxima' or 'fit', found "
                            f"{method!r}")
    given = {k: v for k, v in (("electron", electron), ("blur", blur)) if v is not None}
    if method == "maxima":
        if given:
            raise CountingError(f"{caller}: {' and '.join(given)} apply to "
                                f"method='fit' only (found method='maxima')")
        return None
    for name, value in (("electron", electron), ("blur", blur)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise CountingError(f"{caller}: method='fit' needs {name}= (the "
                                f"{_RESPONSE[name]}), a positive number; found {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise CountingError(f"{caller}: {name} must be a positive finite number "
                                f"(the {_RESPONSE[name]}), found {value!r}")
    return float(electron), float(blur)  # type: ignore[arg-type]
