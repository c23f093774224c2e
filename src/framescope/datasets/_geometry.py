"""Scan geometry of the synthetic dataset: scan rotation and flip, descan, sub-pixel probes.

Conventions (shared with :mod:`framescope.datasets._synthetic`):

* The detector axes are the object's axes (one detector pixel is one Fourier bin of the
  ``(H, W)`` probe window, see :mod:`framescope.datasets._physics`). A scan rotation or flip
  therefore moves the *scan* over the object: scan position ``(iy, ix)`` puts the probe
  centre at object pixel ``origin + step * A @ (iy, ix)`` with

      A = F @ R(rotation).T,   R(t) = [[cos t, sin t], [-sin t, cos t]],   F = diag(-1, 1)
      (when flipped, else the identity).

  ``R`` and ``F`` are the matrices :class:`~framescope.udf.CenterOfMass` applies (``flip_y``
  first, then ``rotation``) to take a detector vector into scan axes, and
  :class:`~framescope.calibration.Calibration` ``rotation``/``flip`` mean the same: the
  synthetic's ``rotation`` and ``flip`` are exactly the calibration that makes the COM field
  curl-free.
* Descan moves the whole pattern by ``descan @ (iy, ix) + descan_offset`` detector pixels,
  done by a linear phase ramp on the exit wave (the far field shifts without interpolation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

__all__ = ["as_descan", "descan_ramps", "placement", "sample_periodic", "scan_extent",
           "scan_matrix", "shifted_probes"]

_EPS = 1e-9  # px: closer than this to a whole pixel is on it


def scan_matrix(rotation: float, flip: bool) -> np.ndarray:
    """``A = F @ R(rotation).T``: object displacement ``(y, x)`` per unit scan displacement."""
    c, s = math.cos(rotation), math.sin(rotation)
    a = np.array([[c, -s], [s, c]])
    if flip:
        a[0] *= -1
    return a


def placement(
    matrix: np.ndarray, step: int, iy: np.ndarray, ix: np.ndarray, low: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Probe window top-left corners (int, ``(n, 2)``) and sub-pixel remainders (``(n, 2)``).

    The scan displacement ``u = step * matrix @ (iy, ix)`` is split into
    ``floor(u) - low`` (a window of the object, ``low`` the floor of the smallest ``u`` over
    the scan) and the remainder ``u - floor(u)`` in ``[0, 1)`` by which the probe is moved
    inside its window.
    """
    u = _snap(step * np.stack([iy, ix], axis=-1).astype(np.float64) @ matrix.T)
    whole = np.floor(u)
    return (whole - low).astype(np.int64), u - whole


def _snap(u: np.ndarray) -> np.ndarray:
    # positions whole up to float error (cos/sin of multiples of 90 degrees) become whole,
    # so they take the exact integer-shift path
    near = np.round(u)
    return np.where(np.abs(u - near) < _EPS, near, u)


def scan_extent(
    matrix: np.ndarray, step: int, scan: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, span)``: floor of the smallest scan displacement, and the whole-pixel range
    of the window corners over the scan (object shape = span + window)."""
    ny, nx = scan
    corners = np.array([[0, 0], [ny - 1, 0], [0, nx - 1], [ny - 1, nx - 1]], np.float64)
    u = np.floor(_snap(step * corners @ matrix.T))
    low = u.min(axis=0)
    return low, u.max(axis=0) - low


def shifted_probes(spectrum: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """The probe (its FFT ``spectrum``) moved by ``frac`` px, one ``(h, w)`` copy per row.

    A Fourier phase ramp: exact for the band-limited probe on its periodic window.
    """
    h, w = spectrum.shape
    qy = sfft.fftfreq(h, 1 / h)
    qx = sfft.fftfreq(w, 1 / w)
    ey = np.exp(-2j * np.pi * frac[:, :1] * qy / h)  # (n, h)
    ex = np.exp(-2j * np.pi * frac[:, 1:] * qx / w)  # (n, w)
    spectra = spectrum * ey[:, :, None] * ex[:, None, :]
    return sfft.ifft2(spectra, workers=-1, overwrite_x=True)


def descan_ramps(
    shift: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Separable phase ramps ``(n, h, 1)`` and ``(n, 1, w)`` that move the far field of a
    ``shape`` window by ``shift`` (``(n, 2)``, detector px)."""
    h, w = shape
    ey = np.exp(2j * np.pi * shift[:, :1] * np.arange(h) / h).astype(np.complex64)
    ex = np.exp(2j * np.pi * shift[:, 1:] * np.arange(w) / w).astype(np.complex64)
    return ey[:, :, None], ex[:, None, :]


def sample_periodic(field: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """``field`` at object pixels ``(yy, xx)``: indexed where they are whole, else a cubic
    spline of the periodic grid."""
    if np.array_equal(yy, np.round(yy)) and np.array_equal(xx, np.round(xx)):
        return field[yy.astype(np.int64) % field.shape[0], xx.astype(np.int64) % field.shape[1]]
    return ndimage.map_coordinates(field, [yy, xx], order=3, mode="grid-wrap")


def as_descan(value: Sequence[Sequence[float]] | np.ndarray | None,
              offset: Sequence[float]) -> tuple[tuple[tuple[float, float], ...],
                                                tuple[float, float]]:
    """Validated ``(2x2 matrix, (dy, dx))`` descan as nested tuples of floats."""
    matrix = np.zeros((2, 2)) if value is None else np.asarray(value, np.float64)
    if matrix.shape != (2, 2) or not np.isfinite(matrix).all():
        raise ValueError(f"descan must be a finite 2x2 matrix (detector px per scan step; "
                         f"rows det y/x, columns scan y/x), found {value!r}")
    off = np.asarray(offset, np.float64)
    if off.shape != (2,) or not np.isfinite(off).all():
        raise ValueError(f"descan_offset must be a finite (dy, dx) in detector px, "
                         f"found {offset!r}")
    return (tuple(map(float, matrix[0])), tuple(map(float, matrix[1]))), (float(off[0]),
                                                                          float(off[1]))
