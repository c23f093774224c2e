"""Initial guesses from the calibration: object pixel, scan positions, convergent probe
(electrons) or zone-plate probe (X-rays, :class:`ZonePlate`).

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
* X-rays (far field): ``angle_per_px = pixel_size / distance``, so the object pixel is
  ``wavelength * distance / (n * pixel_size)``; a zone plate's pupil is an annulus of
  semi-angles ``NA * central_stop / diameter`` to ``NA = wavelength / (2 *
  outer_zone_width)``, and ``defocus`` is the sample's distance past the focus.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ZonePlate", "initial_probe", "object_pixel", "scan_matrix", "scan_positions",
           "window_corners", "zone_plate_probe"]


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
    return window_corners(moved, pixel), moved


def window_corners(moved: np.ndarray, pixel: tuple[float, float]) -> np.ndarray:
    """Probe-window corners in object px of probe displacements ``moved`` (m, object axes):
    shifted so the smallest lies in ``[0, 1)``, whole up to float error made whole."""
    px = np.asarray(moved, np.float64) / np.asarray(pixel)
    near = np.round(px)  # whole up to float error (multiples of 90 degrees) -> whole
    px = np.where(np.abs(px - near) < 1e-6, near, px)
    return px - np.floor(px.min(axis=0))


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
    return _pupil_probe(frame_shape, wavelength, angle_per_px, semiconv, 0.0, defocus,
                        intensity, centre_offset, xp)


def _pupil_probe(frame_shape: tuple[int, int], wavelength: float, angle_per_px: float,
                 outer: float, inner: float, defocus: float, intensity: float,
                 centre_offset: tuple[float, float], xp: types.ModuleType) -> Any:
    """The probe of a (annular when ``inner > 0``) pupil of semi-angles ``outer``/``inner``
    (rad), each edge anti-aliased over one pixel, defocused, scaled to ``intensity``."""
    h, w = frame_shape
    qy = np.fft.fftfreq(h, 1 / h)[:, None] - centre_offset[0]
    qx = np.fft.fftfreq(w, 1 / w)[None, :] - centre_offset[1]
    q = np.hypot(qy, qx)  # detector px from the zero frequency
    radius = outer / angle_per_px
    aperture = np.clip(radius + 0.5 - q, 0.0, 1.0)
    if inner > 0:
        aperture *= np.clip(q - inner / angle_per_px + 0.5, 0.0, 1.0)
    k2 = (q * angle_per_px / wavelength) ** 2
    spectrum = aperture * np.exp(-1j * np.pi * wavelength * defocus * k2)
    probe = np.fft.fftshift(np.fft.ifft2(spectrum))
    norm = np.sum(np.abs(probe) ** 2)
    if not norm > 0:
        raise ValueError(f"initial probe: the aperture (semi-angle {outer * 1e3:.3g} mrad "
                         f"= {radius:.3g} px) holds no pixel")
    probe *= math.sqrt(intensity / norm)
    return xp.asarray(probe.astype(np.complex64))


@dataclass(frozen=True, slots=True)
class ZonePlate:
    """A Fresnel zone plate focusing an X-ray beam (lengths in m, or strings with units).

    Its focus is the far field of a disk pupil of numerical aperture ``NA = wavelength /
    (2 * outer_zone_width)``, less the shadow of the central stop (the order-sorting
    aperture passes the first order only): an annulus of semi-angles ``NA *
    central_stop / diameter`` to ``NA``.

    Parameters
    ----------
    diameter : float or str
        Zone plate diameter (``"150 um"``).
    outer_zone_width : float or str
        Width of the outermost zone (``"50 nm"``): sets the NA and the focal length
        ``diameter * outer_zone_width / wavelength``.
    central_stop : float or str
        Diameter of the central stop (0: none); less than ``diameter``.

    Examples
    --------
    >>> zp = ZonePlate("150 um", "50 nm", central_stop="60 um")
    >>> round(zp.na(1.55e-10) * 1e3, 3)  # mrad at 8 keV
    1.55
    """

    diameter: float
    outer_zone_width: float
    central_stop: float = 0.0

    def __post_init__(self) -> None:
        from framescope.calibration import CalibrationError, parse_quantity

        for name in ("diameter", "outer_zone_width", "central_stop"):
            value = parse_quantity(getattr(self, name), "length", f"zone plate {name}")
            if not (value > 0 or (name == "central_stop" and value == 0)):
                raise CalibrationError(f"zone plate {name}: expected a positive length, "
                                       f"found {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.central_stop >= self.diameter:
            raise CalibrationError(f"zone plate central_stop: expected less than the "
                                   f"diameter {self.diameter:.4g} m, found "
                                   f"{self.central_stop:.4g} m")

    def na(self, wavelength: float) -> float:
        """Numerical aperture (the focus's semi-angle, rad) at ``wavelength`` (m)."""
        return wavelength / (2 * self.outer_zone_width)

    def focal_length(self, wavelength: float) -> float:
        """First-order focal length (m) at ``wavelength`` (m)."""
        return self.diameter * self.outer_zone_width / wavelength


def zone_plate_probe(frame_shape: tuple[int, int], *, wavelength: float,
                     pixel_size_det: float, distance: float, diameter: float,
                     outer_zone_width: float, central_stop: float = 0.0,
                     defocus: float = 0.0, intensity: float = 1.0,
                     centre_offset: tuple[float, float] = (0.0, 0.0),
                     xp: types.ModuleType = np) -> Any:
    """The probe of a Fresnel zone plate at the sample, ``defocus`` m downstream of focus.

    Far-field (Fraunhofer) geometry: one detector pixel subtends ``pixel_size_det /
    distance`` rad, so the object pixel is ``wavelength * distance / (n * pixel_size_det)``
    for an ``n``-pixel window (:func:`object_pixel`). The pupil is the annulus of
    :class:`ZonePlate` (semi-angles ``NA * central_stop / diameter`` to ``NA = wavelength
    / (2 * outer_zone_width)``, edges anti-aliased over one pixel); ``defocus`` propagates
    the focus by the paraxial (Fresnel) transfer function ``exp(-i pi wavelength defocus
    |k|^2)``: the convention of :func:`initial_probe`. In focus without a stop the
    intensity's first zero lies at the Airy radius ``0.61 wavelength / NA``.

    Parameters
    ----------
    frame_shape : (int, int)
        The window (= the collected frame's shape).
    wavelength : float
        m (photons: ``h c / E``, :func:`framescope.calibration.photon_wavelength`).
    pixel_size_det : float
        Detector pixel (of the collected frames: times the binning), m.
    distance : float
        Sample-detector distance, m.
    diameter, outer_zone_width, central_stop : float
        Of the zone plate, m (see :class:`ZonePlate`).
    defocus : float
        Sample downstream of the focus, m (negative: upstream).
    intensity : float
        ``sum |P|^2``: the mean measured frame sum.
    centre_offset : (float, float)
        Where the zero frequency lies in the frames, px from ``(h//2, w//2)``.
    xp : module
        Array module of the result.

    Returns
    -------
    complex64 array of ``frame_shape``

    Raises
    ------
    ValueError
        The pupil does not fit the window (the detector does not hold the bright field).
    """
    zp = ZonePlate(diameter, outer_zone_width, central_stop)
    angle = pixel_size_det / distance
    return _zone_plate(frame_shape, zp, wavelength, angle, defocus, intensity,
                       centre_offset, xp)


def _zone_plate(frame_shape: tuple[int, int], zp: ZonePlate, wavelength: float,
                angle_per_px: float, defocus: float, intensity: float,
                centre_offset: tuple[float, float], xp: types.ModuleType) -> Any:
    na = zp.na(wavelength)
    radius = na / angle_per_px
    if radius + 1 > min(frame_shape) / 2:
        raise ValueError(f"zone plate probe: the pupil (NA {na * 1e3:.4g} mrad = "
                         f"{radius:.1f} detector px) does not fit the {frame_shape[0]}x"
                         f"{frame_shape[1]} frame (at most {min(frame_shape) / 2 - 1:g} px): "
                         f"check energy, outer_zone_width, distance and pixel size")
    inner = na * zp.central_stop / zp.diameter
    return _pupil_probe(frame_shape, wavelength, angle_per_px, na, inner, defocus,
                        intensity, centre_offset, xp)
