"""The bright-field disk of a (mean) diffraction frame: centre, radius, angle per pixel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from framescope.calibration._model import Calibration
from framescope.calibration._quantities import CalibrationError, parse_quantity

if TYPE_CHECKING:
    import holoviews as hv

__all__ = ["DiskFit", "bf_disk"]


@dataclass(frozen=True, slots=True)
class DiskFit:
    """The bright-field disk found by :func:`bf_disk`.

    Attributes
    ----------
    center : (float, float)
        Disk centre ``(cy, cx)`` in detector pixels (pixel centres at integers).
    radius : float
        Disk radius in detector pixels, ``sqrt(area / pi)``.
    level, background : float
        Intensity inside the disk and just outside it.
    semiconv : float or None
        The convergence semi-angle (rad) given to :func:`bf_disk`.
    angle_per_px : float or None
        ``semiconv / radius`` (rad per detector pixel) when ``semiconv`` was given.
    frame : numpy.ndarray
        The frame measured (for :meth:`overlay`; not compared).
    """

    center: tuple[float, float]
    radius: float
    level: float
    background: float
    semiconv: float | None = None
    angle_per_px: float | None = None
    frame: np.ndarray | None = field(default=None, repr=False, compare=False)

    def fields(self) -> dict[str, Any]:
        """The :class:`Calibration` fields this fit measures: ``center``, and
        ``angle_per_px`` and ``semiconv`` when a convergence angle was given."""
        out: dict[str, Any] = {"center": self.center}
        if self.angle_per_px is not None:
            out.update(angle_per_px=self.angle_per_px, semiconv=self.semiconv)
        return out

    def calibration(self, base: Calibration | None = None, source: str = "bf_disk",
                    ) -> Calibration:
        """``base`` (default an empty calibration) with :meth:`fields` set from ``source``."""
        return (base if base is not None else Calibration()).updated(source, **self.fields())

    def overlay(self) -> hv.Overlay:
        """The frame (when kept) with the fitted circle and centre, in detector pixels
        (``det_x``, ``det_y``; show with ``invert_yaxis=True`` for the detector's view)."""
        import holoviews as hv

        cy, cx = self.center
        parts = []
        if self.frame is not None:
            h, w = self.frame.shape
            parts.append(hv.Image((np.arange(w), np.arange(h), self.frame),
                                  kdims=["det_x", "det_y"], vdims=["intensity"]))
        # unstyled: options need a plotting extension loaded; the dashboard styles them
        parts.append(hv.Ellipse(cx, cy, 2 * self.radius))
        parts.append(hv.Points([(cx, cy)], kdims=["det_x", "det_y"]))
        return hv.Overlay(parts).relabel(
            f"BF disk: centre ({cy:.2f}, {cx:.2f}) px, radius {self.radius:.2f} px")


def _levels(smooth: np.ndarray) -> tuple[float, float, float]:
    """Disk and background levels by iterating the threshold to their midpoint (isodata):
    medians, so a halo of dark-field signal or a few hot pixels do not move them much."""
    lo, hi = float(smooth.min()), float(smooth.max())
    t = (lo + hi) / 2
    top, bottom = hi, lo
    for _ in range(50):
        inside = smooth > t
        if not inside.any() or inside.all():
            break
        top, bottom = float(np.median(smooth[inside])), float(np.median(smooth[~inside]))
        new = (top + bottom) / 2
        if abs(new - t) <= 1e-6 * (hi - lo):
            break
        t = new
    return t, top, bottom


def bf_disk(frame: Any, semiconv: float | str | None = None, *,
            smooth: float = 1.0) -> DiskFit:
    """Centre and radius of the bright-field disk in a diffraction frame, sub-pixel.

    The disk is the connected region above half its level (the midpoint of disk and
    background levels, iterated from the (smoothed) frame's range). Its level is then the
    median of its inside and the background the median of a ring just outside it, so a
    dark-field halo is not counted as disk. Pixels well inside count whole, and pixels
    within 2 px of the edge with their covered fraction ``(I - background) / (disk -
    background)``, so the area ``A`` and the centroid are sub-pixel: ``radius = sqrt(A /
    pi)``. Use a mean frame (``arr.mean(("scan_y", "scan_x"))``) so that the disk is filled.

    Parameters
    ----------
    frame : array-like, shape (det_y, det_x)
        The frame (numpy, xarray or dask; it is computed).
    semiconv : float or str, optional
        Known convergence semi-angle (rad, or a string with a unit such as ``"20 mrad"``):
        gives ``angle_per_px = semiconv / radius``.
    smooth : float
        Gaussian sigma (px) of the smoothing (after a 3x3 median) used to find the levels
        and the region, not the area, which uses the frame itself; 0 for the median only.

    Returns
    -------
    DiskFit

    Raises
    ------
    CalibrationError
        Not a 2D frame, a flat frame, or no whole disk (the bright region reaches the
        frame's border).

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> fit = bf_disk((np.hypot(yy - 30.0, xx - 33.0) < 10) * 100.0, "20 mrad")
    >>> [round(v) for v in fit.center], round(fit.radius), round(fit.angle_per_px * 1e3, 1)
    ([30, 33], 10, 2.0)
    """
    data = np.asarray(frame, dtype=np.float64)
    if data.ndim != 2:
        raise CalibrationError(f"bf_disk: expected one 2D frame (det_y, det_x), found shape "
                               f"{data.shape}; average the scan first")
    if not np.isfinite(data).all():
        data = np.where(np.isfinite(data), data, np.nanmedian(data))
    angle = None if semiconv is None else parse_quantity(semiconv, "angle", "semiconv")
    if angle is not None and not angle > 0:
        raise CalibrationError(f"semiconv: expected a positive angle, found {semiconv!r}")
    # a 3x3 median first: hot pixels neither set the levels nor become the disk
    smoothed = ndimage.median_filter(data, 3, mode="nearest")
    if smooth > 0:
        smoothed = ndimage.gaussian_filter(smoothed, smooth)
    rough, top, bottom = _levels(smoothed)
    if not top > bottom:
        raise CalibrationError(f"bf_disk: the frame is flat ({top}), no disk to find")
    labels, n = ndimage.label(smoothed > rough)
    # the disk: the brightest-summed region (a hot pixel or a Bragg spot is smaller)
    sums = ndimage.sum_labels(smoothed - rough, labels, np.arange(1, n + 1))
    disk = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sums)))
    h, w = data.shape
    if disk[0].any() or disk[-1].any() or disk[:, 0].any() or disk[:, -1].any():
        raise CalibrationError(f"bf_disk: the region above half level ({rough:.4g}) reaches "
                               f"the border of the {h}x{w} frame: no whole disk to measure")
    region = ndimage.binary_dilation(disk, iterations=2)
    # levels from the frame itself (smoothing lowers a small disk): its inside, and a ring
    # just outside it (the local background, dark-field halo included)
    inner = ndimage.binary_erosion(disk, iterations=2)
    ring = ndimage.binary_dilation(disk, iterations=5) & ~region
    top = float(np.median(data[inner if inner.any() else disk]))
    bottom = float(np.median(data[ring])) if ring.any() else bottom
    if not top > bottom:
        raise CalibrationError(f"bf_disk: the disk ({top:.4g}) is not brighter than its "
                               f"surroundings ({bottom:.4g})")
    # covered fraction: whole inside; across the edge linear in the intensity, clipped
    # only far out so that noise does not bias the area (clipping at 0 and 1 would)
    band = region & ~inner
    fraction = inner + band * np.clip((data - bottom) / (top - bottom), -0.5, 1.5)
    area = float(fraction.sum())
    cy = float(fraction.sum(axis=1) @ np.arange(h)) / area
    cx = float(fraction.sum(axis=0) @ np.arange(w)) / area
    radius = float(np.sqrt(area / np.pi))
    return DiskFit(center=(cy, cx), radius=radius, level=top, background=bottom,
                   semiconv=angle, angle_per_px=None if angle is None else angle / radius,
                   frame=data)
