"""The numerics of tilt-corrected bright field (tcBF, parallax): pure numpy, no engine.

Conventions (those of :class:`~framescope.udf.Parallax`): a stack holds one virtual image
per bright-field (BF) detector pixel (or binned group) ``j``, ``images[j]`` of shape
``(ny, nx)`` over the scan. The *shift* ``s_j`` (scan px, ``(y, x)``) is the gradient of the
aberration function over ``2π`` at that pixel: the pixel sees the specimen point ``u +
s_j`` while the probe sits at scan position ``u``, so ``images[j](u) = ref(u + s_j)`` and its
features appear displaced by ``-s_j``. A linear model ``s = M k + c`` with ``k`` the pixel's
detector position (px from the beam centre) holds for defocus, two-fold astigmatism and a
scan rotation; :func:`decompose` splits ``M``.

Matrices ``R(t) = [[cos t, sin t], [-sin t, cos t]]`` and ``F = diag(-1, 1)`` (flip) are
those of :class:`~framescope.calibration.Calibration`: a detector vector ``v`` is ``R F v``
in scan axes (the COM field's convention).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

__all__ = ["Decomposition", "decompose", "fit_linear", "register", "rotation_matrix",
           "shift_sum", "splat_sum"]

# bytes of complex64 spectra held at once while registering or summing (chunks of pixels)
_CHUNK_BYTES = 64 * 2**20


def rotation_matrix(t: float, flip: bool = False) -> np.ndarray:
    """``R(t) @ F``: a detector vector ``(y, x)`` into scan axes."""
    c, s = math.cos(t), math.sin(t)
    r = np.array([[c, s], [-s, c]])
    return r @ np.diag([-1.0, 1.0]) if flip else r


def _freqs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return sfft.fftfreq(shape[0])[:, None], sfft.fftfreq(shape[1])[None, :]


def _chunks(n: int, per_item: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` ranges of items of ``per_item`` bytes, about ``_CHUNK_BYTES`` each."""
    step = max(1, _CHUNK_BYTES // max(per_item, 1))
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _tukey(n: int, alpha: float = 0.5) -> np.ndarray:
    # flat middle, cosine edges over alpha/2 of the length at each end
    x = np.linspace(0, 1, n)
    w = np.ones(n)
    edge = alpha / 2
    lo, hi = x < edge, x > 1 - edge
    w[lo] = 0.5 * (1 - np.cos(np.pi * x[lo] / edge))
    w[hi] = 0.5 * (1 - np.cos(np.pi * (1 - x[hi]) / edge))
    return w


def _peak(corr: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Sub-pixel position (wrapped to ``[-n/2, n/2)``) of the largest value of ``corr``
    within ``radius`` px of ``centre``: integer maximum, then a parabola per axis."""
    h, w = corr.shape
    fy, fx = _freqs((h, w))
    dy = (fy * h - centre[0] + h / 2) % h - h / 2  # distance from centre, wrapped
    dx = (fx * w - centre[1] + w / 2) % w - w / 2
    masked = np.where(dy**2 + dx**2 <= radius**2, corr, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(masked)), corr.shape)
    out = []
    for axis, i, n in ((0, iy, h), (1, ix, w)):
        idx = [iy, ix]
        vals = []
        for d in (-1, 0, 1):
            idx[axis] = (i + d) % n
            vals.append(corr[idx[0], idx[1]])
        lo, mid, hi = vals
        denom = lo - 2 * mid + hi
        frac = 0.5 * (lo - hi) / denom if denom < 0 else 0.0
        pos = i + float(np.clip(frac, -0.5, 0.5))
        out.append((pos + n / 2) % n - n / 2)
    return np.array(out)


def _ramp(u: np.ndarray, start: np.ndarray, n: int, edge: float) -> np.ndarray:
    """Per row of ``start``: 1 over ``[start, start + n - 1]`` with raised-cosine edges
    ``edge`` px wide inside it, 0 outside (``u`` the grid positions)."""
    t = u[None, :] - start[:, None]
    rise = np.clip(np.minimum(t + 1, n - t) / edge, 0, 1)
    return 0.5 * (1 - np.cos(np.pi * rise))


def register(images: np.ndarray, guess: np.ndarray, weights: np.ndarray, *,
             radius: float, lowpass: float = 0.25) -> np.ndarray:
    """Shifts ``s_j`` (scan px) of each image against the weighted mean of all others.

    Each image (relative contrast ``I/mean - 1``, zero-padded so nothing wraps) is first
    moved by its ``guess`` with a Fourier shift, so the residual is small. The reference
    is the weighted mean of the moved images without the image itself (its own noise would
    pull the peak to zero). Both are windowed by one taper over the region every moved
    image covers: a window that moved with each image, or a reference with holes inside
    it, biased every shift towards zero by a few per cent. The residual is the peak of
    their cross-correlation, low-passed by a Gaussian of ``lowpass`` cycles/px, searched
    within ``radius`` px.

    Parameters
    ----------
    images : ndarray, shape (n, ny, nx)
        The BF images over the scan (no NaN).
    guess : ndarray, shape (n, 2)
        Current shifts (scan px); zeros for none.
    weights : ndarray, shape (n,)
        Weight of each image in the reference (its mean intensity).
    radius : float
        Search radius (px) of the residual.

    Returns
    -------
    ndarray, shape (n, 2)
        The measured shifts, ``guess`` plus the residual.
    """
    n, ny, nx = images.shape
    means = images.reshape(n, -1).mean(axis=1)
    means = np.where(means > 0, means, 1.0)
    shape = (2 * ny, 2 * nx)
    oy, ox = ny // 2, nx // 2  # the image's corner in the padded grid
    fy, fx = _freqs(shape)
    gauss = np.exp(-(fy**2 + fx**2) / (2 * lowpass**2))
    soft = np.outer(_tukey(ny, 4 / ny), _tukey(nx, 4 / nx)).astype(np.float32)
    # image j shows features displaced by d = -s; moving it by -d = s puts its support
    # at corner + s: all of them cover [corner + max s, corner + n + min s)
    window = np.ones(shape)
    for axis, (o, size) in enumerate(((oy, ny), (ox, nx))):
        lo_s, hi_s = float(guess[:, axis].max()), float(guess[:, axis].min())
        length = max(size - (lo_s - hi_s), size / 4)  # a quarter at least, if biased
        start = o + (lo_s + hi_s) / 2 + (size - length) / 2
        ramp = _ramp(np.arange(shape[axis]), np.array([start]), length,
                     max(2.0, length / 8))[0]
        window *= ramp[:, None] if axis == 0 else ramp[None, :]

    def moved(lo: int, hi: int) -> np.ndarray:
        padded = np.zeros((hi - lo, *shape), np.float32)
        padded[:, oy:oy + ny, ox:ox + nx] = (images[lo:hi] / means[lo:hi, None, None]
                                              - 1) * soft
        spectra = sfft.fft2(padded, workers=-1)
        s = guess[lo:hi]
        spectra *= np.exp(-2j * np.pi * (fy * s[:, :1, None] + fx * s[:, 1:, None]))
        return sfft.ifft2(spectra, workers=-1).real * window

    per = 16 * shape[0] * shape[1]
    total = np.zeros(shape)
    for lo, hi in _chunks(n, per):
        total += np.tensordot(weights[lo:hi], moved(lo, hi), axes=1)
    wsum = float(weights.sum())
    gref = np.conj(sfft.fft2(total))
    out = np.empty((n, 2))
    for lo, hi in _chunks(n, per):
        spectra = sfft.fft2(moved(lo, hi), workers=-1)
        for j in range(hi - lo):
            w = float(weights[lo + j])
            # the reference without image j (linear, so in Fourier space)
            others = (gref - w * np.conj(spectra[j])) / max(wsum - w, 1e-30)
            corr = sfft.ifft2(spectra[j] * others * gauss).real
            # the residual displacement r of the moved image: d = d_guess + r, s = -d
            out[lo + j] = guess[lo + j] - _peak(corr, np.zeros(2), radius)
    return out


def fit_linear(k: np.ndarray, shifts: np.ndarray, weights: np.ndarray,
               reject: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares ``s = M k + c``, refitted once without outliers.

    Outliers are shifts whose residual exceeds ``reject`` times the weighted median
    absolute residual (a pixel whose correlation locked onto noise).

    Returns
    -------
    M : ndarray, shape (2, 2)
        Scan px per detector px.
    c : ndarray, shape (2,)
        Offset (scan px): the reference's own displacement.
    used : ndarray of bool, shape (n,)
        The pixels kept in the final fit.
    """
    design = np.column_stack([k, np.ones(len(k))])
    used = np.isfinite(shifts).all(axis=1) & (weights > 0)
    coef = np.zeros((3, 2))
    for _ in range(2):
        sw = np.sqrt(weights[used])[:, None]
        coef, *_ = np.linalg.lstsq(design[used] * sw, shifts[used] * sw, rcond=None)
        resid = np.hypot(*(design @ coef - shifts).T)
        scale = np.median(resid[used]) if used.any() else 0.0
        keep = used & (resid <= reject * max(scale, 0.05))
        if keep.sum() < 3 or keep.sum() == used.sum():
            break
        used = keep
    return coef[:2].T, coef[2], used


@dataclass(frozen=True, slots=True)
class Decomposition:
    """``M = R(rotation) F S`` with ``S`` symmetric (in the detector frame).

    Attributes
    ----------
    rotation : float
        Scan rotation, rad (the branch nearest the hint: ``rotation + π`` with ``-S`` fits
        equally, the ambiguity of a defocus sign).
    defocus : float
        Mean of the principal values of ``S`` (units of ``M``).
    astigmatism : float
        Half the difference of the principal values (>= 0).
    astigmatism_angle : float
        Direction of the larger principal value, rad from detector x towards y, in
        ``[0, π)``.
    symmetric : ndarray, shape (2, 2)
        ``S``.
    asymmetry : float
        Norm of the antisymmetric remainder of ``R^T M F`` over the norm of ``M``: large
        when the flip is wrong or the shifts are not linear.
    """

    rotation: float
    defocus: float
    astigmatism: float
    astigmatism_angle: float
    symmetric: np.ndarray
    asymmetry: float


def decompose(m: np.ndarray, *, flip: bool, rotation_hint: float = 0.0) -> Decomposition:
    """Split the shift matrix ``M`` into rotation, defocus and astigmatism.

    ``M F = R(t) S'`` with ``S' = F S F`` symmetric: the ``t`` that makes ``R(t)^T M F``
    symmetric is ``atan2(G01 - G10, G00 + G11)`` (``G = M F``) or that plus ``π``; the one
    nearer ``rotation_hint`` is taken.
    """
    f = np.diag([-1.0, 1.0]) if flip else np.eye(2)
    g = m @ f
    t = math.atan2(g[0, 1] - g[1, 0], g[0, 0] + g[1, 1])
    alt = t + math.pi
    if abs(_wrap(alt - rotation_hint)) < abs(_wrap(t - rotation_hint)):
        t = alt
    t = _wrap(t)
    sp = rotation_matrix(t).T @ g
    norm = float(np.linalg.norm(m)) or 1.0
    asym = float(abs(sp[0, 1] - sp[1, 0]) / norm)
    s = f @ (0.5 * (sp + sp.T)) @ f
    vals, vecs = np.linalg.eigh(s)  # ascending
    major = vecs[:, 1]  # (y, x) components
    angle = math.atan2(major[0], major[1]) % math.pi
    return Decomposition(rotation=t, defocus=float(vals.mean()),
                         astigmatism=float((vals[1] - vals[0]) / 2),
                         astigmatism_angle=angle, symmetric=s, asymmetry=asym)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def coverage(shifts: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Weighted count of images that cover each output pixel after moving by ``shifts``
    (linear at the fractional edges); separable per image."""
    ny, nx = shape
    y, x = np.arange(ny)[None, :], np.arange(nx)[None, :]
    # an image moved by s covers u where 0 <= u - s <= n - 1
    cy = np.clip(np.minimum(y - shifts[:, :1] + 1, ny - (y - shifts[:, :1])), 0, 1)
    cx = np.clip(np.minimum(x - shifts[:, 1:] + 1, nx - (x - shifts[:, 1:])), 0, 1)
    return np.einsum("j,jy,jx->yx", weights, cy, cx)


def shift_sum(images: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each image by ``+s_j`` (undoing its displacement) and sum, at scan resolution.

    Fourier shifts on a zero-padded grid of twice the size (content moved past the scan
    edge is dropped, not wrapped): images minus their means are summed, and the output is
    the summed mean plus that sum rescaled by the share of images covering each pixel.

    Parameters
    ----------
    images : ndarray, shape (n, ny, nx)
    shifts : ndarray, shape (n, 2)
        ``s_j`` in scan px.

    Returns
    -------
    total : ndarray, shape (ny, nx)
        The tilt-corrected sum, in the units of the images (a sum over ``j``).
    cover : ndarray, shape (ny, nx)
        Fraction (0..1) of the images covering each pixel.
    """
    n, ny, nx = images.shape
    means = images.reshape(n, -1).mean(axis=1)
    shape = (2 * ny, 2 * nx)
    fy, fx = _freqs(shape)
    per = 8 * shape[0] * shape[1]
    acc = np.zeros(shape, np.complex128)
    for lo, hi in _chunks(n, per):
        padded = np.zeros((hi - lo, *shape), np.float32)
        padded[:, :ny, :nx] = images[lo:hi] - means[lo:hi, None, None]
        spectra = sfft.fft2(padded, workers=-1)
        s = shifts[lo:hi]
        spectra *= np.exp(-2j * np.pi * (fy * s[:, :1, None] + fx * s[:, 1:, None]))
        acc += spectra.sum(axis=0)
    summed = sfft.ifft2(acc).real[:ny, :nx]
    cover = coverage(shifts, np.ones(n), (ny, nx)) / n
    return means.sum() + summed / np.maximum(cover, 0.25), cover


def splat_sum(images: np.ndarray, shifts: np.ndarray, upsample: int,
              sigma: float = 0.5) -> np.ndarray:
    """The tilt-corrected sum on a grid ``upsample`` times finer than the scan.

    Sample ``images[j](u)`` shows the specimen at ``u + s_j``: it is spread bilinearly onto
    the fine grid there, with its weight; the output is the Gaussian-smoothed (``sigma``
    fine px, to fill sparse cells) weighted mean times ``n`` (a sum, as
    :func:`shift_sum`). Samples that land outside the scan are dropped.

    Returns
    -------
    ndarray, shape (ny * upsample, nx * upsample)
    """
    n, ny, nx = images.shape
    up = int(upsample)
    fine = (ny * up, nx * up)
    num = np.zeros(fine[0] * fine[1])
    den = np.zeros_like(num)
    uy, ux = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    for lo, hi in _chunks(n, 64 * ny * nx):
        py = (uy[None] + shifts[lo:hi, 0, None, None]) * up
        px = (ux[None] + shifts[lo:hi, 1, None, None]) * up
        y0, x0 = np.floor(py), np.floor(px)
        vals = images[lo:hi].astype(np.float64)
        for dy in (0, 1):
            wy = 1 - np.abs(py - (y0 + dy))
            iy = (y0 + dy).astype(np.int64)
            for dx in (0, 1):
                w = wy * (1 - np.abs(px - (x0 + dx)))
                ix = (x0 + dx).astype(np.int64)
                ok = (iy >= 0) & (iy < fine[0]) & (ix >= 0) & (ix < fine[1]) & (w > 0)
                flat = iy[ok] * fine[1] + ix[ok]
                num += np.bincount(flat, w[ok] * vals[ok], num.size)
                den += np.bincount(flat, w[ok], num.size)
    num = ndimage.gaussian_filter(num.reshape(fine), sigma, mode="nearest")
    den = ndimage.gaussian_filter(den.reshape(fine), sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-6 * den.max(), n * num / den, np.nan)


def phase_flip(image: np.ndarray, chi: np.ndarray) -> np.ndarray:
    """``image`` (zero-mean contrast) times ``sign(sin chi)`` in Fourier space, where
    ``chi`` is the aberration phase on ``image``'s FFT grid: makes a sin(chi) transfer
    positive over every band (the zero frequency, where chi = 0, is dropped)."""
    sign = np.sign(np.sin(chi))
    return sfft.ifft2(sfft.fft2(image) * sign).real


def chi_grid(shape: tuple[int, int], curvature: np.ndarray) -> np.ndarray:
    """``chi(f) = π f^T C f`` on the FFT grid of ``shape`` (``f`` in cycles/px, ``C``
    in px², the scan-frame ``λ Δf`` matrix over the squared pixel size)."""
    fy, fx = _freqs(shape)
    c = curvature
    return np.pi * (c[0, 0] * fy**2 + (c[0, 1] + c[1, 0]) * fy * fx + c[1, 1] * fx**2)


def align(images: np.ndarray, k: np.ndarray, weights: np.ndarray, *,
          iterations: int = 2, matrix: np.ndarray | None = None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Measure every image's shift and fit ``s = M k + c``, growing outwards.

    Rim pixels of a strongly defocused probe are displaced by many px, too far to find
    against the blurred mean image. So pixels within 35 %, then 65 % of the largest
    ``|k|`` are registered first (the inner ones barely move), each stage predicting the
    next from its fit; then ``iterations`` rounds over all pixels (align, new reference,
    align). A known ``matrix`` skips the growing.

    Parameters
    ----------
    images : ndarray, shape (n, ny, nx)
    k : ndarray, shape (n, 2)
        Detector position of each pixel (px from the beam centre, ``(y, x)``).
    weights : ndarray, shape (n,)
        Mean intensity of each image: the weight in the reference and the fit.
    iterations : int
        Rounds over all pixels.
    matrix : ndarray, shape (2, 2), optional
        Known ``M`` (e.g. from a given defocus): the first guess.

    Returns
    -------
    shifts, M, c, used
        Measured shifts ``(n, 2)``, the fit (:func:`fit_linear`) and the pixels it kept.
    """
    n, ny, nx = images.shape
    reach = np.hypot(*k.T)
    far = float(reach.max()) or 1.0
    m = np.zeros((2, 2)) if matrix is None else np.asarray(matrix, np.float64)
    c = np.zeros(2)
    stages = [] if matrix is not None else [0.35, 0.65]
    stages += [1.0] * max(1, iterations)
    shifts = np.full((n, 2), np.nan)
    used = np.zeros(n, bool)
    for i, frac in enumerate(stages):
        sel = reach <= frac * far + 1e-9
        if sel.sum() < 4:  # too few to fit: take the innermost four
            sel = reach <= np.sort(reach)[min(3, n - 1)] + 1e-9
        guess = k[sel] @ m.T + c
        if i == 0 and matrix is None:
            radius = min(ny, nx) / 3  # nothing known yet
        else:
            radius = max(2.0, 0.25 * float(np.abs(guess).max()))
        shifts[:] = np.nan
        shifts[sel] = register(images[sel], guess, weights[sel], radius=radius)
        m, c, used = fit_linear(k, shifts, weights)
    return shifts, m, c, used
