"""The detector response that ``count_electrons(method="fit")`` needs - the mean signal of one
electron and the width of its charge cloud - estimated from low-dose frames themselves.

1.  Local-maximum events (:func:`~framescope.counting._kernel.count_block`, background
    threshold as :func:`estimate_thresholds` gives it, no X-ray threshold: an X-ray's peak is
    an event too, so it isolates nothing) of ``n_frames`` frames sampled at random.
2.  Isolated events: no other event within 4 px (Chebyshev), the 5x5 window inside the
    frame, none of its pixels bad or above ``xray_threshold``. Most are single electrons;
    the rest are merged pairs (two electrons within ~1.5 px, one maximum) at twice the
    charge, and X-rays at tens of electrons.
3.  Single electrons: the charge ``c`` of each window within [0.5, 1.5] of a centre ``m``,
    found from the median by taking the mean of that band until it settles (the pairs, at
    ``2 m``, are outside). If there are many events near ``m / 2``, ``m`` was the pairs' and
    the search restarts from ``m / 2``.
4.  ``blur``: minimises the summed squared residual of the pixel-integrated Gaussian fitted
    (amplitude and position, as the fit counter does) to the singles' 5x5 windows.
    ``electron``: the mean fitted amplitude (the cloud's total charge, the window's missing
    tails included). Steps 3-4 are done twice, the second time selecting by the amplitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numba
import numpy as np

from framescope.counting._cloud import _R, _fit, _q, profile_table
from framescope.counting._count import _Frames, _Pixels
from framescope.counting._counted import CountingError
from framescope.counting._kernel import count_block
from framescope.counting._thresholds import noise_peak

if TYPE_CHECKING:
    import xarray as xr

    from framescope.corrections import Corrections

__all__ = ["Response", "estimate_response"]

_ISOLATION = 4  # px (Chebyshev): a neighbour further out leaves < 0.1 % in the window
_MIN_EVENTS = 50  # isolated single electrons needed (the mean charge to ~1.5 %)
_BAND = (0.5, 1.5)  # singles' charge relative to the centre m; pairs sit near 2 m
_BLUR_RANGE = (0.2, 2.0)  # px searched for the cloud's std


@dataclass(frozen=True)
class Response:
    """A detector's response to one electron, as :func:`estimate_response` measured it.

    Attributes
    ----------
    electron : float
        Mean signal of one electron, ADU (of the corrected values): ``count_electrons``'s
        ``electron=``.
    blur : float
        Standard deviation of its charge cloud, px: ``count_electrons``'s ``blur=``.
    n_events : int
        Isolated single-electron events used.
    isolated_fraction : float
        Their fraction of all local-maximum events of the sampled frames (a few % at
        0.05 e-/px; far less above, where neighbours are the rule).
    """

    electron: float
    blur: float
    n_events: int
    isolated_fraction: float


@numba.njit(cache=True, nogil=True)
def _fit_windows(win, tab, amps):  # pragma: no cover - compiled
    """Fit one cloud to each 5x5 window of ``win`` (amplitude into ``amps``); the summed
    squared residual, the amplitude re-solved at the final position."""
    wt = np.ones((2 * _R + 1, 2 * _R + 1), dtype=np.float32)
    pr = np.zeros((12, 2 * _R + 1))
    total = 0.0
    for k in range(win.shape[0]):
        r = win[k]
        _, ty, tx = _fit(r, wt, tab, _R, _R, 0.0, math.nan, 0.0, pr)
        fy, fx = tab[_q(ty), 0], tab[_q(tx), 0]
        mm = md = dd = 0.0
        for a in range(2 * _R + 1):
            for b in range(2 * _R + 1):
                m, d = fy[a] * fx[b], np.float64(r[a, b])
                mm, md, dd = mm + m * m, md + m * d, dd + d * d
        amps[k] = md / mm
        total += dd - md * md / mm
    return total


def _singles(charge: np.ndarray) -> np.ndarray:
    """Which charges are single electrons (see step 3 of the module docstring)."""
    m = float(np.median(charge))
    for _restart in range(3):
        for _ in range(20):
            band = (charge > _BAND[0] * m) & (charge < _BAND[1] * m)
            if not band.any():
                break
            m_new = float(charge[band].mean())
            if abs(m_new - m) < 1e-4 * abs(m):
                break
            m = m_new
        # singles near m / 2 (more than border-clipped or noise events could make): the
        # band held pairs, as at high dose where most isolated maxima are merged pairs
        low = (charge > 0.35 * m) & (charge < 0.65 * m)
        if m <= 0 or low.sum() < 0.25 * band.sum():
            break
        m *= 0.5
    return (charge > _BAND[0] * m) & (charge < _BAND[1] * m)


def _fit_blur(win: np.ndarray) -> tuple[float, np.ndarray]:
    """The ``blur`` of least squared residual over the windows, and the amplitudes there."""
    from scipy import optimize  # here: ~0.3 s to import, only for an estimate

    amps = np.empty(len(win))
    res = optimize.minimize_scalar(
        lambda b: _fit_windows(win, profile_table(b), amps), bounds=_BLUR_RANGE,
        method="bounded", options={"xatol": 1e-3})
    blur = float(res.x)
    _fit_windows(win, profile_table(blur), amps)
    return blur, amps


def estimate_response(
    frames: np.ndarray | xr.DataArray,
    *,
    dark: np.ndarray | None = None,
    corrections: Corrections | Literal[False] | None = None,
    xray_threshold: float | None = None,
    n_frames: int = 64,
    seed: int = 0,
) -> Response:
    """Mean signal of one electron and width of its charge cloud, from low-dose frames.

    Fits the pixel-integrated Gaussian of ``count_electrons(method="fit")`` to the isolated
    local-maximum events of ``n_frames`` frames sampled at random (see
    :mod:`framescope.counting._response`). Frames of at most about 0.05 e-/px work best:
    above, few events are isolated, and more of those are merged pairs.

    Parameters
    ----------
    frames : ndarray or DataArray
        ``(n, det_y, det_x)`` or ``(scan_y, scan_x, det_y, det_x)`` frames, numpy or lazy
        (only the sampled frames are read).
    dark : ndarray, optional
        Dark reference ``(det_y, det_x)`` subtracted first.
    corrections : Corrections or False, optional
        As for :func:`count_electrons` (default: those attached to a DataArray); windows
        holding a bad pixel are left out.
    xray_threshold : float, optional
        Events with a pixel above this (ADU above the dark) within 4 px are left out. By
        default X-rays are left out by their charge (tens of electrons).
    n_frames : int
        Frames sampled.
    seed : int
        Seed of the sample.

    Returns
    -------
    Response

    Raises
    ------
    CountingError
        Fewer than 50 isolated single-electron events (dose too high or too low: use more
        frames or frames of <= ~0.05 e-/px), frames of the wrong rank or dtype, a dark
        reference or corrections that do not fit them.

    Examples
    --------
    >>> from framescope.datasets import lowdose
    >>> ds = lowdose(scan=(8, 8), det=(64, 64), dose=0.03, seed=3)
    >>> r = estimate_response(ds.frames, dark=ds.dark_frames(64).mean(axis=0))
    >>> round(r.electron, -1), round(r.blur, 1)
    (160.0, 0.7)
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, int | np.integer) or n_frames < 1:
        raise CountingError(f"estimate_response: n_frames must be a positive int, found "
                            f"{n_frames!r}")
    try:
        f = _Frames(frames)
        px = _Pixels(f, dark, corrections)
    except CountingError as e:  # the shared checks name count_electrons
        raise CountingError(str(e).replace("count_electrons:", "estimate_response:", 1)) from None
    sample = np.ascontiguousarray(f.sample(n_frames, seed))
    n, (h, w) = len(sample), f.frame_shape
    values = sample.astype(np.float32) - px.dark
    if px.gain is not None:
        values *= px.gain
    good = np.ones((h, w), bool) if px.bad is None else ~px.bad
    # count_electrons's background threshold (4 noise sigmas)
    noise_mean, noise_sigma = noise_peak(values[:, good])
    counts, idx, _ = count_block(sample, px.dark, noise_mean + 4.0 * noise_sigma, math.inf,
                                 False, px.gain)
    fi = np.repeat(np.arange(n), counts)
    y, x = np.divmod(idx.astype(np.int64), w)

    from scipy import ndimage  # here, like optimize: importing the package stays light

    # isolated: alone in the (2 _ISOLATION + 1)^2 box, the window inside the frame
    events = np.zeros((n, h, w), np.float32)
    events[fi, y, x] = 1.0
    box = (1, 2 * _ISOLATION + 1, 2 * _ISOLATION + 1)
    near = ndimage.uniform_filter(events, box, mode="constant") * (box[1] * box[2])
    keep = (near[fi, y, x] < 1.5) & (y >= _R) & (y < h - _R) & (x >= _R) & (x < w - _R)
    if px.bad is not None:  # no bad pixel in the window
        keep &= ~ndimage.maximum_filter(px.bad, 2 * _R + 1, mode="constant")[y, x]
    if xray_threshold is not None:  # no X-ray pixel within the isolation distance
        hot = values > np.float32(xray_threshold)
        keep &= ~ndimage.maximum_filter(hot, box, mode="constant")[fi, y, x]
    fi, y, x = fi[keep], y[keep], x[keep]

    d = np.arange(-_R, _R + 1)
    win = values[fi[:, None, None], y[:, None, None] + d[:, None], x[:, None, None] + d]
    single = _singles(win.sum(axis=(1, 2), dtype=np.float64)) if len(win) else keep[:0]
    amps = np.empty(0)
    for _ in range(2):  # the second time, select by the fitted amplitude
        win = np.ascontiguousarray(win[single])
        if len(win) < _MIN_EVENTS:
            density = len(idx) / (n * h * w)
            why = ("too high: most events have a neighbour within 4 px" if density > 0.02
                   else "too low, or too few frames")
            raise CountingError(
                f"estimate_response: found {len(win)} isolated single-electron events in "
                f"{n} frames ({len(idx)} events, {density:.3g} per px), expected at least "
                f"{_MIN_EVENTS}; the dose is {why}. Use more frames (n_frames=) or frames "
                f"of <= ~0.05 e-/px")
        blur, amps = _fit_blur(win)
        single = _singles(amps)
    return Response(electron=float(amps[single].mean()), blur=blur,
                    n_events=int(single.sum()),
                    isolated_fraction=float(single.sum() / max(len(idx), 1)))
