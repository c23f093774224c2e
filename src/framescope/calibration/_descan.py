"""Descan: the pattern centre drifting linearly across the scan, fitted and removed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from framescope.calibration._dpc import as_maps, com_pair
from framescope.calibration._quantities import CalibrationError

if TYPE_CHECKING:
    import holoviews as hv

__all__ = ["DescanFit", "descan_fit"]


@dataclass(frozen=True, slots=True)
class DescanFit:
    """A plane fitted to the COM over the scan: ``com ≈ slope @ (iy, ix) + offset``.

    ``(iy, ix)`` are scan indices (0 at the first position), whatever the coordinates.

    Attributes
    ----------
    slope : ((float, float), (float, float))
        COM change per scan step: row 0 (1) for ``com_y`` (``com_x``), column 0 (1) per step
        along ``scan_y`` (``scan_x``); the ``descan`` matrix of
        :func:`framescope.datasets.synthetic`.
    offset : (float, float)
        The plane at scan position ``(0, 0)``.
    residual : float
        RMS of what the plane leaves (both components), the object's own signal and noise.
    shape : (int, int)
        The scan shape fitted.
    units : str
        The units of the COM (``attrs["units"]`` of ``com_y``; ``"px"`` when absent).
    """

    slope: tuple[tuple[float, float], tuple[float, float]]
    offset: tuple[float, float]
    residual: float
    shape: tuple[int, int]
    units: str = "px"

    def plane(self, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The fitted shift ``(dy, dx)`` at every position of a ``shape`` scan (default the
        fitted one)."""
        ny, nx = self.shape if shape is None else shape
        iy, ix = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        (a, b), (c, d) = self.slope
        return a * iy + b * ix + self.offset[0], c * iy + d * ix + self.offset[1]

    def remove(self, com_y: Any, com_x: Any = None) -> tuple[Any, Any]:
        """COM with the plane subtracted: ``(com_y, com_x)`` DataArrays for DataArrays (or
        the COM Dataset) given, else numpy arrays.

        Raises
        ------
        CalibrationError
            Maps of another shape than the fit's.
        """
        com_y, com_x = com_pair(com_y, com_x, "DescanFit.remove")
        ys, xs = as_maps(com_y, com_x, "DescanFit.remove")
        if ys.shape != self.shape:
            raise CalibrationError(f"DescanFit.remove: fitted on a {self.shape} scan, found "
                                   f"COM maps of shape {ys.shape}")
        py, px = self.plane()
        if isinstance(com_y, xr.DataArray) and isinstance(com_x, xr.DataArray):
            return com_y.copy(data=ys - py), com_x.copy(data=xs - px)
        return ys - py, xs - px

    def overlay(self, max_arrows: int = 16) -> hv.VectorField:
        """The fitted shift as arrows over the scan (at most ``max_arrows`` a side)."""
        import holoviews as hv

        ny, nx = self.shape
        py, px = self.plane()
        sy, sx = max(1, -(-ny // max_arrows)), max(1, -(-nx // max_arrows))
        iy, ix = np.meshgrid(np.arange(ny)[::sy], np.arange(nx)[::sx], indexing="ij")
        dy, dx = py[::sy, ::sx], px[::sy, ::sx]
        # holoviews angles are counter-clockwise from +x with y up; scan y grows downward
        angle = np.arctan2(-dy, dx)
        return hv.VectorField((ix.ravel(), iy.ravel(), angle.ravel(),
                               np.hypot(dy, dx).ravel()),
                              kdims=["scan_x", "scan_y"], vdims=["angle", "magnitude"],
                              ).relabel(f"descan ({self.units} per step)")


def descan_fit(com_y: Any, com_x: Any = None, *, mask: Any = None) -> DescanFit:
    """Least-squares plane through the COM maps: the descan (pattern drift) of the scan.

    Parameters
    ----------
    com_y, com_x : array-like or xarray.Dataset
        COM maps ``(scan_y, scan_x)``, or the :class:`~framescope.udf.CenterOfMass`
        Dataset as ``com_y`` alone. NaN positions are left out.
    mask : array-like of bool, optional
        Positions to fit (e.g. vacuum, where the specimen adds no shift); default all.

    Returns
    -------
    DescanFit
        Slope per scan step, offset, residual; :meth:`DescanFit.remove` subtracts it.

    Raises
    ------
    CalibrationError
        Maps not 2D or of different shapes, a mask of another shape, or fewer than three
        usable positions.

    Examples
    --------
    >>> iy, ix = np.mgrid[:8, :8]
    >>> fit = descan_fit(0.5 * iy + 2.0, -0.25 * ix)
    >>> (np.round(fit.slope, 6) + 0.0).tolist(), (np.round(fit.offset, 6) + 0.0).tolist()
    ([[0.5, 0.0], [0.0, -0.25]], [2.0, 0.0])
    """
    com_y, com_x = com_pair(com_y, com_x, "descan_fit")
    ys, xs = as_maps(com_y, com_x, "descan_fit")
    use = np.isfinite(ys) & np.isfinite(xs)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != ys.shape:
            raise CalibrationError(f"descan_fit: mask of shape {m.shape} for COM maps of "
                                   f"shape {ys.shape}")
        use &= m
    if use.sum() < 3:
        raise CalibrationError(f"descan_fit: {int(use.sum())} usable positions; a plane needs "
                               "at least 3 (finite and in the mask)")
    iy, ix = np.nonzero(use)
    design = np.stack([iy, ix, np.ones_like(iy)], axis=1).astype(np.float64)
    if np.linalg.matrix_rank(design) < 3:
        raise CalibrationError("descan_fit: the usable positions lie on one line; a plane "
                               "cannot be fitted")
    values = np.stack([ys[use], xs[use]], axis=1)
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)  # rows: iy, ix, 1
    left = values - design @ coef
    units = com_y.attrs.get("units", "px") if isinstance(com_y, xr.DataArray) else "px"
    c = coef.tolist()
    return DescanFit(slope=((c[0][0], c[1][0]), (c[0][1], c[1][1])), offset=(c[2][0], c[2][1]),
                     residual=float(np.sqrt(np.mean(left * left))), shape=ys.shape,
                     units=str(units))
