"""Initial guesses from the calibration: object pixel, scan positions, convergent probe.

Conventions (those of :mod:`framescope.datasets` and :class:`~framescope.calibration.
Calibration`):

* One detector pixel is ``angle_per_px`` rad; the probe window has the (collected) frame's
  shape ``(h, w)``, so an object pixel is ``lambda / (h * angle_per_px)`` by
  ``lambda / (w * angle_per_px)`` m.
* The probe in reciprocal space is ``A(k) exp(-i chi(k))`` with the aperture ``A`` of radius
  ``semiconv / lambda`` and ``chi(k) = pi * lambda * defocus * |k|^2`` (``k`` in 1/m,
  scattering angle ``lambda * k``); positive ``defocus`` is the sign of the synthetic
  data's ``defocus`` (its rad at the rim are ``defocus_m = defocus_rad * lambda / (pi *
  semiconv^2)``).
* Scan position ``(iy, ix)`` moves the probe by ``A @ (iy * dy, ix * dx)`` m on the object
  (``dy, dx`` = ``scan_step``) with ``A = F @ R(rotation).T``, ``R(t) = [[cos t, sin t],
  [-sin t, cos t]]`` and ``F = diag(-1, 1)`` when flipped: the rotation and flip that
  :class:`~framescope.udf.CenterOfMass` applies to take detector vectors into scan axes.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np

__all__ = ["initial_probe", "object_pixel", "scan_matrix", "scan_positions"]


def object_pixel(wavelength: float, angle_per_px: float, frame_shape: tuple[int, int],
                 ) -> tuple[float, float]:
    """Object pixel ``(dy, dx)`` in m: ``wavelength / (n * angle_per_px)`` per axis."""
    h, w = frame_shape
    return wavelength / (h * angle_per_px), wavelength / (w * angle_per_px)


def scan_matrix(rotation: float, flip: bool) -> np.ndarray:
    """``A = F @ R(rotation).T``: object displacement ``(y, x)`` per scan displacement."""
    c, s = math.cos(rotation), math.sin(rotation)
    a = np.array([[c, -s], [s, c]])
    if flip:
        a[0] *= -1
    return a


def scan_positions(scan_shape: tuple[int, int], scan_step: tuple[float, float],
                   pixel: tuple[float, float], *, rotation: float = 0.0, flip: bool = False,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Probe-window corners on the object grid, and the probe displacement in m.

    Parameters
    ----------
    scan_shape : (int, int)
    scan_step : (float, float)
        ``(dy, dx)`` between scan positions, m.
    pixel : (float, float)
        Object pixel ``(dy, dx)``, m (see :func:`object_pixel`).
    rotation, flip
        Scan rotation (rad) and flip, as in the calibration.

    Returns
    -------
    corners : ndarray, shape (n, 2)
        Top-left ``(y, x)`` of each position's window in object px (row-major over the
        scan), fractional where the step is no whole number of pixels; the smallest lies
        in ``[0, 1)`` (the grid's origin is the floor of the smallest displacement, so
        whole-pixel scans start at exactly 0).
    displacement : ndarray, shape (n, 2)
        Probe displacement from scan position ``(0, 0)`` in m, along the object axes.
    """
    ny, nx = scan_shape
    iy, ix = np.divmod(np.arange(ny * nx), nx)
    steps = np.stack([iy * scan_step[0], ix * scan_step[1]], axis=-1)
    moved = steps @ scan_matrix(rotation, flip).T  # m along the object axes
    px = moved / np.asarray(pixel)
    near = np.round(px)  # whole up to float error (multiples of 90 degrees) -> whole
    px = np.where(np.abs(px - near) < 1e-6, near, px)
    return px - np.floor(px.min(axis=0)), moved


def initial_probe(frame_shape: tuple[int, int], *, wavelength: float, angle_per_px: float,
                  semiconv: float, defocus: float = 0.0, intensity: float = 1.0,
                  centre_offset: tuple[float, float] = (0.0, 0.0),
                  xp: types.ModuleType = np) -> Any:
    """Convergent probe on the ``frame_shape`` window, centred at ``(h//2, w//2)``.

    Parameters
    ----------
    frame_shape : (int, int)
        The window (= the collected frame's shape).
    wavelength : float
        m.
    angle_per_px : float
        Scattering angle per (collected) detector pixel, rad.
    semiconv : float
        Convergence semi-angle, rad (the aperture is anti-aliased over one pixel, as the
        synthetic data's).
    defocus : float
        m; ``chi(k) = pi * wavelength * defocus * |k|^2``.
    intensity : float
        ``sum |P|^2``: the mean measured frame sum (an ortho FFT keeps it; a phase object
        absorbs nothing).
    centre_offset : (float, float)
        Where the zero frequency lies in the frames, in detector px from ``(h//2, w//2)``.
    xp : module
        Array module of the result.

    Returns
    -------
    complex64 array of ``frame_shape``
    """
    h, w = frame_shape
    qy = np.fft.fftfreq(h, 1 / h)[:, None] - centre_offset[0]
    qx = np.fft.fftfreq(w, 1 / w)[None, :] - centre_offset[1]
    q = np.hypot(qy, qx)  # detector px from the zero frequency
    radius = semiconv / angle_per_px
    aperture = np.clip(radius + 0.5 - q, 0.0, 1.0)
    k2 = (q * angle_per_px / wavelength) ** 2
    spectrum = aperture * np.exp(-1j * np.pi * wavelength * defocus * k2)
    probe = np.fft.fftshift(np.fft.ifft2(spectrum))
    norm = np.sum(np.abs(probe) ** 2)
    if not norm > 0:
        raise ValueError(f"initial probe: the aperture (semiconv {semiconv * 1e3:.3g} mrad "
                         f"= {radius:.3g} px) holds no pixel")
    probe *= math.sqrt(intensity / norm)
    return xp.asarray(probe.astype(np.complex64))
