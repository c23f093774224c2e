"""Corrections built from data: dark statistics in one pass, and the bad-pixel map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.corrections._model import Corrections, CorrectionsError

__all__ = ["DarkStats", "from_dark"]


@dataclass(frozen=True)
class DarkStats:
    """Per-pixel dark statistics and the bad pixels they reveal.

    Attributes
    ----------
    mean, std : ndarray (det_y, det_x)
        Mean and standard deviation of the dark frames.
    n : int
        Dark frames used.
    dead : ndarray of bool
        ``std == 0``: a pixel that never changes (dead or stuck).
    noisy : ndarray of bool
        ``std > k_noisy * median(std)``.
    hot : ndarray of bool
        From the bright reference: ``bright > k_hot * median(bright)`` (hot) or ``bright <
        median(bright) / k_hot`` (cold); all False without one.
    """

    mean: np.ndarray
    std: np.ndarray
    n: int
    dead: np.ndarray
    noisy: np.ndarray
    hot: np.ndarray

    @classmethod
    def from_moments(cls, mean: np.ndarray, std: np.ndarray, n: int, *,
                     k_noisy: float = 5.0, bright: Any = None,
                     k_hot: float = 5.0) -> DarkStats:
        """Statistics of ``n`` dark frames with per-pixel ``mean`` and ``std`` (computed
        elsewhere, e.g. merged batch by batch from a live dark series), with the bad-pixel
        rules of :func:`from_dark`."""
        dead = std == 0
        med = float(np.median(std[~dead])) if (~dead).any() else 0.0
        noisy = std > k_noisy * med if med > 0 else np.zeros_like(dead)
        hot = np.zeros_like(dead)
        if bright is not None:
            b = np.asarray(bright, dtype=np.float64)
            if b.shape != mean.shape:
                raise CorrectionsError(f"bright: expected the frame shape {mean.shape}, "
                                       f"found {b.shape}")
            bmed = float(np.median(b))
            hot = (b > k_hot * bmed) | (b < bmed / k_hot)
        return cls(mean, std, int(n), dead, noisy, hot)

    @property
    def bad(self) -> np.ndarray:
        """Every bad pixel: dead, noisy or hot."""
        return self.dead | self.noisy | self.hot

    def report(self) -> dict[str, int]:
        """How many pixels each test marked (a pixel may fail several)."""
        return {"frames": self.n, "pixels": int(self.bad.size), "dead": int(self.dead.sum()),
                "noisy": int(self.noisy.sum()), "hot": int(self.hot.sum()),
                "bad": int(self.bad.sum())}

    def corrections(self, **params: Any) -> Corrections:
        """:class:`Corrections` with this dark and bad map (``params``: the others, e.g.
        ``gain=``, ``bad_fill="neighbours"``, ``threshold=``)."""
        return Corrections(dark=self.mean, bad=self.bad, **params)

    def overlay(self) -> Any:
        """The bad-pixel map over the dark mean (holoviews; plot-ready)."""
        import holoviews as hv

        h, w = self.mean.shape
        ys, xs = np.nonzero(self.bad)
        return (hv.Image((np.arange(w), np.arange(h), self.mean), kdims=["det_x", "det_y"],
                         vdims=["dark"])
                * hv.Points((xs, ys), kdims=["det_x", "det_y"])).relabel(
            f"dark mean, {int(self.bad.sum())} bad pixels")


def from_dark(dark: Any, *, k_noisy: float = 5.0, bright: Any = None, k_hot: float = 5.0,
              **opts: Any) -> DarkStats:
    """Dark statistics (one pass over ``dark``) and the bad pixels they reveal.

    Parameters
    ----------
    dark : DataArray (…, det_y, det_x) or array of frames
        Dark frames: a framescope DataArray (run by the engine: any size, lazily) or an
        in-memory ``(n, det_y, det_x)`` array.
    k_noisy : float
        A pixel whose std exceeds ``k_noisy`` times the median std is noisy.
    bright : array-like (det_y, det_x), optional
        A bright reference (a flat illumination's mean frame) for hot and cold pixels.
    k_hot : float
        Hot: above ``k_hot`` times the bright median; cold: below the median / ``k_hot``.
    **opts
        Passed to :func:`framescope.run` (``client=``, ``progress=``).

    Examples
    --------
    >>> stats = from_dark(dark_frames)  # doctest: +SKIP
    >>> arr.fs.virtual_image(ring, corrections=stats.corrections(bad_fill="neighbours"))
    ... # doctest: +SKIP
    """
    import framescope
    from framescope.udf import FrameStats

    if not hasattr(dark, "dims"):
        a = np.asarray(dark)
        if a.ndim != 3:
            raise CorrectionsError(f"dark: expected frames (n, det_y, det_x) or a "
                                   f"DataArray, found shape {a.shape}")
        dark = framescope.from_array(a, scan=(1, a.shape[0]))
    res = framescope.run(FrameStats(), dark, **opts)
    return DarkStats.from_moments(res["mean"].values, res["std"].values, int(res["n"]),
                                  k_noisy=k_noisy, bright=bright, k_hot=k_hot)
