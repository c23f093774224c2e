"""Scan rotation and flip between detector and scan axes from a centre-of-mass (DPC) map.

The field of a thin object is a gradient (the phase's), so it has no curl once the COM
vector is expressed in scan axes. With ``F = diag(-1, 1)`` when flipped and
``R(t) = [[cos t, sin t], [-sin t, cos t]]``, the field is ``R(rotation) @ F @ com``: what
:class:`~framescope.udf.CenterOfMass` computes for ``rotation=degrees(rotation)`` and
``flip_y=flip``, and what :class:`~framescope.calibration.Calibration` ``rotation`` (rad) and
``flip`` mean. Differentiation is linear, so the curl at angle ``t`` is
``cos(t) * C - sin(t) * D`` with ``C``, ``D`` the curl and divergence of ``F @ com``; its mean
square is a quadratic form in ``(cos t, sin t)`` whose minimum has a closed form, exact on
the scan grid: no search is needed (the curve over all angles is kept for plotting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from framescope.calibration._model import Calibration
from framescope.calibration._quantities import CalibrationError

if TYPE_CHECKING:
    import holoviews as hv

__all__ = ["DpcRotation", "dpc_rotation"]


def com_pair(com_y: Any, com_x: Any, caller: str) -> tuple[Any, Any]:
    """``(com_y, com_x)`` from a COM Dataset (``com_y``/``com_x`` variables) or two maps."""
    if isinstance(com_y, xr.Dataset):
        if com_x is not None:
            raise CalibrationError(f"{caller}: give a COM Dataset or com_y and com_x, not both")
        missing = {"com_y", "com_x"} - set(com_y.data_vars)
        if missing:
            raise CalibrationError(f"{caller}: the Dataset lacks {sorted(missing)}; expected "
                                   f"CenterOfMass results, found {sorted(com_y.data_vars)}")
        return com_y["com_y"], com_y["com_x"]
    if com_x is None:
        raise CalibrationError(f"{caller}: com_x is missing (give com_y and com_x, or the COM "
                               "Dataset)")
    return com_y, com_x


def as_maps(com_y: Any, com_x: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """Both COM maps as 2D float64 arrays of one shape (``(scan_y, scan_x)``)."""
    ys, xs = np.asarray(com_y, np.float64), np.asarray(com_x, np.float64)
    if ys.ndim != 2 or ys.shape != xs.shape:
        raise CalibrationError(f"{caller}: expected com_y and com_x as 2D scan maps of one "
                               f"shape, found {ys.shape} and {xs.shape}")
    return ys, xs


def _derivatives(f: np.ndarray, step: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    # central differences as CenterOfMass takes them, so its curl is what is minimised
    gy = np.gradient(f, step[0], axis=0) if f.shape[0] > 1 else np.zeros_like(f)
    gx = np.gradient(f, step[1], axis=1) if f.shape[1] > 1 else np.zeros_like(f)
    return gy, gx


def _rotate(dy: np.ndarray, dx: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = math.cos(t), math.sin(t)
    return c * dy + s * dx, -s * dy + c * dx


@dataclass(frozen=True, slots=True)
class DpcRotation:
    """The scan rotation and flip found by :func:`dpc_rotation`.

    Attributes
    ----------
    rotation : float
        Rotation (rad, in ``(-pi/2, pi/2]``) that makes ``R(rotation) @ F @ com`` curl-free
        (module docstring); ``rotation + pi`` is equally curl-free (it negates the field),
        a choice the curl cannot make.
    flip : bool
        Whether detector y must be mirrored first.
    curl, divergence : float
        RMS curl and RMS divergence of the rotated field (COM units per scan step): a good
        fit has ``curl`` well below ``divergence``.
    curl_other_flip : float
        The smallest RMS curl with the other ``flip``: how clearly the flip was decided.
    angles : numpy.ndarray
        Angles (rad) of :attr:`curl_curves`.
    curl_curves : numpy.ndarray
        RMS curl over :attr:`angles`, row 0 without flip, row 1 with flip.
    """

    rotation: float
    flip: bool
    curl: float
    divergence: float
    curl_other_flip: float
    angles: np.ndarray = field(repr=False, compare=False)
    curl_curves: np.ndarray = field(repr=False, compare=False)

    @property
    def degrees(self) -> float:
        """:attr:`rotation` in degrees, as ``CenterOfMass(rotation=...)`` takes it."""
        return math.degrees(self.rotation)

    def fields(self) -> dict[str, Any]:
        """The :class:`Calibration` fields found: ``rotation`` (rad) and ``flip``."""
        return {"rotation": self.rotation, "flip": self.flip}

    def calibration(self, base: Calibration | None = None, source: str = "dpc_rotation",
                    ) -> Calibration:
        """``base`` (default an empty calibration) with :meth:`fields` set from ``source``."""
        return (base if base is not None else Calibration()).updated(source, **self.fields())

    def apply(self, com_y: Any, com_x: Any = None) -> tuple[Any, Any]:
        """The field ``(field_y, field_x)`` in scan axes: ``R(rotation) @ F @ com``.

        Takes what :func:`dpc_rotation` takes; returns DataArrays for DataArrays (or a
        Dataset) given, else numpy arrays.
        """
        com_y, com_x = com_pair(com_y, com_x, "DpcRotation.apply")
        dy = -np.asarray(com_y, np.float64) if self.flip else np.asarray(com_y, np.float64)
        fy, fx = _rotate(dy, np.asarray(com_x, np.float64), self.rotation)
        if isinstance(com_y, xr.DataArray):
            return com_y.copy(data=fy).rename("field_y"), com_y.copy(data=fx).rename("field_x")
        return fy, fx

    def overlay(self) -> hv.Overlay:
        """RMS curl against rotation (degrees) with and without flip, the choice marked."""
        import holoviews as hv

        deg = np.degrees(self.angles)
        curves = [hv.Curve((deg, self.curl_curves[i]), "rotation (deg)", "RMS curl",
                           label=f"flip={bool(i)}") for i in (0, 1)]
        return hv.Overlay([*curves, hv.VLine(self.degrees)]).relabel(
            f"scan rotation {self.degrees:.2f} deg, flip={self.flip}")


def _quadratic(dy: np.ndarray, dx: np.ndarray, step: tuple[float, float],
               ) -> tuple[float, float, float]:
    """``<C²>, <D²>, <C D>`` of the unrotated field's curl ``C`` and divergence ``D``."""
    dyy, dyx = _derivatives(dy, step)
    dxy, dxx = _derivatives(dx, step)
    curl, div = dxy - dyx, dyy + dxx
    ok = np.isfinite(curl) & np.isfinite(div)
    if not ok.any():
        raise CalibrationError("dpc_rotation: no scan position with a finite curl (a scan of "
                               "at least 2x2 finite COM values is needed)")
    curl, div = curl[ok], div[ok]
    return float(np.mean(curl * curl)), float(np.mean(div * div)), float(np.mean(curl * div))


def dpc_rotation(com_y: Any, com_x: Any = None, *, step: tuple[float, float] = (1.0, 1.0),
                 n_angles: int = 180) -> DpcRotation:
    """The scan rotation and flip that make a centre-of-mass field curl-free.

    Parameters
    ----------
    com_y, com_x : array-like or xarray.Dataset
        COM shift maps ``(scan_y, scan_x)`` on the detector (any units; offsets do not
        matter), or the Dataset of :class:`~framescope.udf.CenterOfMass` (``arr.fs.com()``)
        as ``com_y`` alone. NaN positions are left out.
    step : (float, float)
        Scan step ``(dy, dx)`` in any common unit: only their ratio matters (non-square
        scan pixels).
    n_angles : int
        Number of angles over ``[-90, 90)`` degrees for :attr:`DpcRotation.curl_curves`
        (default one per degree).

    Returns
    -------
    DpcRotation
        ``rotation`` in rad (Calibration convention; ``CenterOfMass(rotation=
        result.degrees, flip_y=result.flip)`` gives the curl-free field) and ``flip``.

    Raises
    ------
    CalibrationError
        Maps of different shapes or not 2D, or too few finite values.

    Notes
    -----
    For each flip the mean square curl ``M(t) = a cos²t + b sin²t - 2 m sin t cos t``
    (``a = <C²>``, ``b = <D²>``, ``m = <C D>``) equals
    ``(a + b)/2 + rho cos(2t + phi)`` with ``rho cos(phi) = (a - b)/2`` and
    ``rho sin(phi) = m``; it is least at ``t = (pi - phi) / 2`` (mod pi). The flip with the
    smaller least curl relative to its divergence wins.
    """
    com_y, com_x = com_pair(com_y, com_x, "dpc_rotation")
    ys, xs = as_maps(com_y, com_x, "dpc_rotation")
    steps = (float(step[0]), float(step[1]))
    angles = np.linspace(-np.pi / 2, np.pi / 2, int(n_angles), endpoint=False)
    best: list[tuple[float, float, float, float]] = []  # (score, t, curl, div) per flip
    curves = np.empty((2, angles.size))
    for flip in (False, True):
        a, b, m = _quadratic(-ys if flip else ys, xs, steps)
        t = (math.pi - math.atan2(m, (a - b) / 2)) / 2
        t = math.remainder(t, math.pi)  # (-pi/2, pi/2]
        if t <= -math.pi / 2:
            t += math.pi
        c, s = math.cos(t), math.sin(t)
        curl = math.sqrt(max(a * c * c + b * s * s - 2 * m * c * s, 0.0))
        div = math.sqrt(max(a * s * s + b * c * c + 2 * m * c * s, 0.0))
        best.append((curl / div if div > 0 else math.inf, t, curl, div))
        cc, ss = np.cos(angles), np.sin(angles)
        curves[int(flip)] = np.sqrt(np.maximum(a * cc**2 + b * ss**2 - 2 * m * cc * ss, 0))
    flip = best[1][0] < best[0][0]
    _, t, curl, div = best[int(flip)]
    return DpcRotation(rotation=t, flip=flip, curl=curl, divergence=div,
                       curl_other_flip=best[int(not flip)][2], angles=angles,
                       curl_curves=curves)
