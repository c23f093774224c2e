"""Background and X-ray thresholds from the statistics of sampled frames.

The recipe of stempy's ``calculate_thresholds`` (Ercius et al., the 4D Camera at NCEM):
sample frames, subtract the dark reference, then

* background threshold = centre + ``k_background`` x width of a Gaussian fitted to the noise
  peak of the pixel-value histogram (an electron must stand ``k_background`` noise sigmas out
  of the read noise; 4 by default);
* X-ray threshold = mean + ``k_xray`` x standard deviation of all sampled values, electrons
  included (10 by default): a single pixel that far out is an X-ray or a hot event.

stempy fits the Gaussian to the whole histogram, so the tail of electron signal widens it
(at 0.1 e-/px by about half, see tests/counting). Here only the side of the peak that
electrons cannot reach is trusted: charge only adds signal, so values below the peak are
read noise alone. A robust start (median and MAD of the values below the median) is refined
by fitting a parabola to the log-histogram over ``[centre - 3 sigma, centre + 1 sigma]``,
weighted by the counts, twice. The fit sees whole pixel values: 1/12 ADU² of rounding is
part of the noise it reports.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from framescope.errors import CountingError

__all__ = ["Thresholds", "noise_peak", "thresholds_from_values"]

# histogram bins per noise sigma in the peak fit
_BINS_PER_SIGMA = 6
# values the peak fit uses at most (a relative error of the sigma of about 0.1%)
_MAX_VALUES = 2**20
# the peak fit window in sigmas below and above the centre
_FIT_BELOW, _FIT_ABOVE = 3.0, 0.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Background and X-ray thresholds (ADU above the dark reference) and where they came
    from.

    Attributes
    ----------
    background, xray : float
        An event is a pixel with ``background < value < xray`` (dark-subtracted, compared in
        float32) that is a local maximum.
    noise_mean, noise_sigma : float or None
        Centre and width of the Gaussian fitted to the noise peak; None when both thresholds
        were given.
    mean, std : float or None
        Mean and standard deviation of all sampled values.
    k_background, k_xray : float or None
        The multipliers used: ``background = noise_mean + k_background * noise_sigma`` and
        ``xray = mean + k_xray * std`` unless a threshold was given.
    n_frames : int
        Frames sampled (0 when both thresholds were given).
    """

    background: float
    xray: float
    noise_mean: float | None = None
    noise_sigma: float | None = None
    mean: float | None = None
    std: float | None = None
    k_background: float | None = None
    k_xray: float | None = None
    n_frames: int = 0

    def __post_init__(self) -> None:

        for name in ("background", "xray"):
            value = getattr(self, name)
            if not isinstance(value, int | float | np.number) or not math.isfinite(value):
                raise CountingError(f"{name} threshold must be a finite number, found {value!r}")
        if not self.background < self.xray:
            raise CountingError(
                f"thresholds inverted: the background threshold ({self.background:g}) must be "
                f"below the X-ray threshold ({self.xray:g})"
            )

    def to_json(self) -> str:
        """The thresholds as a JSON object."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Thresholds:
        """Inverse of :meth:`to_json`."""
        fields: dict[str, Any] = json.loads(text)
        return cls(**fields)


def noise_peak(values: np.ndarray) -> tuple[float, float]:
    """Centre and standard deviation of the noise peak of dark-subtracted pixel values.

    Parameters
    ----------
    values : ndarray
        Pixel values (any shape), dark-subtracted; a minority may carry signal above the
        noise.

    Returns
    -------
    (float, float)
        Centre and sigma of a Gaussian fitted to the side of the histogram peak that signal
        cannot reach (see the module docstring). Sigma is 0 for noiseless values.
    """
    v = np.asarray(values).ravel()
    if v.size > _MAX_VALUES:  # every k-th value: noise is independent from pixel to pixel
        v = v[::-(-v.size // _MAX_VALUES)]
    v = v.astype(np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("noise_peak: no finite values to estimate the noise from")
    centre = float(np.median(v))
    below = v[v <= centre]
    sigma = 1.4826 * float(np.median(centre - below))  # MAD of the signal-free side
    if sigma == 0:
        return centre, 0.0
    # whole numbers (no dark reference, or an integer one) need bins of whole numbers: bins
    # of sigma/6 would hold one or two of them in turn, a comb no Gaussian fits
    integers = bool(np.all(v == np.rint(v)))
    for _ in range(2):
        fitted = _fit_log_parabola(v, centre, sigma, integers)
        if fitted is None:
            break
        centre, sigma = fitted
    return centre, sigma


def _fit_log_parabola(v: np.ndarray, centre: float, sigma: float,
                      integers: bool) -> tuple[float, float] | None:
    """Gaussian through the histogram near the peak: a weighted parabola fit of log counts."""
    width = sigma / _BINS_PER_SIGMA
    lo, hi = centre - _FIT_BELOW * sigma, centre + _FIT_ABOVE * sigma
    if integers:  # edges half-way between whole numbers
        width = max(1, round(width))
        lo, hi = math.floor(lo) - 0.5, math.ceil(hi) + 0.5
    n_bins = max(3, math.ceil((hi - lo) / width))
    hi = lo + n_bins * width
    counts, edges = np.histogram(v, bins=n_bins, range=(lo, hi))
    x = 0.5 * (edges[:-1] + edges[1:]) - centre
    keep = counts > 0
    if keep.sum() < 3:
        return None
    # log counts have variance ~1/n: weights sqrt(n) in the residual
    c2, c1, _ = np.polyfit(x[keep], np.log(counts[keep]), 2, w=np.sqrt(counts[keep]))
    if not c2 < 0:
        return None
    # bins of sigma/6 widen the fitted variance by a negligible 1/432 (whole numbers bring
    # their 1/12 of rounding, which is part of the noise of integer frames)
    var = -1.0 / (2.0 * c2)
    return centre + c1 * var, math.sqrt(var)


def thresholds_from_values(
    values: np.ndarray,
    *,
    k_background: float = 4.0,
    k_xray: float = 10.0,
    background: float | None = None,
    xray: float | None = None,
    n_frames: int = 0,
) -> Thresholds:
    """Thresholds from dark-subtracted sample values (see the module docstring).

    Parameters
    ----------
    values : ndarray
        Dark-subtracted pixel values of the sampled frames.
    k_background, k_xray : float
        Multipliers of the noise sigma and of the overall standard deviation.
    background, xray : float, optional
        Thresholds to keep as given instead of estimating them.
    n_frames : int
        Frames the values came from (recorded).
    """

    for name, k in (("k_background", k_background), ("k_xray", k_xray)):
        if not (math.isfinite(k) and k > 0):
            raise CountingError(f"{name} must be a positive number, found {k!r}")
    v = np.asarray(values).ravel()
    if v.dtype.kind == "f" and not np.isfinite(v).all():
        v = v[np.isfinite(v)]
    if v.size < 2:
        raise CountingError(f"thresholds need sample pixel values, found {v.size}")
    noise_mean, noise_sigma = noise_peak(v)
    mean = float(v.mean(dtype=np.float64))
    std = float(v.std(dtype=np.float64, ddof=1))
    return Thresholds(
        background=noise_mean + k_background * noise_sigma if background is None
        else float(background),
        xray=mean + k_xray * std if xray is None else float(xray),
        noise_mean=noise_mean, noise_sigma=noise_sigma, mean=mean, std=std,
        k_background=float(k_background), k_xray=float(k_xray), n_frames=int(n_frames),
    )
