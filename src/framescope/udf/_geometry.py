"""Scattering geometry of detector pixels: radius, scattering angle, q, k and azimuth χ.

Conventions (the same as pyFAI's where pyFAI has the quantity):

* ``2θ`` is the **scattering angle**: the angle between the unscattered beam and the ray to
  a pixel (Bragg angle θ = 2θ / 2).
* With ``camera_length`` ``L`` and ``pixel_size`` ``p`` known, the detector is flat and
  normal to the beam: ``2θ = atan(r p / L)`` for a pixel centre at ``r`` pixels from the
  beam centre (exact for a real detector at distance ``L``: X-rays, pyFAI's geometry
  without tilts). With only ``angle_per_px`` ``a``: ``2θ = r a`` (the linear,
  small-angle mapping a TEM's effective camera length is calibrated in; below 50 mrad the
  two differ by less than 0.1 %).
* ``q = 4π sin(θ) / λ`` in 1/nm (pyFAI's ``q_nm^-1``); ``k = 2 sin(θ) / λ = q / 2π =
  1/d`` in 1/Å, the spatial frequency 4D-STEM people quote (``≈ 2θ / λ`` at small angles,
  which is what :mod:`framescope.masks` uses: within 0.01 % below 50 mrad).
* ``χ = atan2(y - cy, x - cx)`` in degrees, ``(-180, 180]``: 0 along ``+det_x``, +90
  along ``+det_y`` (pyFAI's ``chi`` with its default detector orientation). Detector-frame
  angles: no scan rotation or flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["RADIAL_UNITS", "RadialUnit", "ScatteringGeometry"]

RadialUnit = Literal["px", "mrad", "2th_deg", "q_nm^-1", "k_A^-1"]


class _Unit(NamedTuple):
    coord: str  # name of the coordinate (and of the bin dimension when binning in it)
    units: str  # attrs["units"]
    needs: str  # "" | "angle" | "wavelength": what the calibration must give


#: radial units → (coordinate name, units attr, what it needs from the calibration)
RADIAL_UNITS: dict[str, _Unit] = {
    "px": _Unit("radius", "px", ""),
    "mrad": _Unit("angle", "mrad", "angle"),
    "2th_deg": _Unit("two_theta", "deg", "angle"),
    "q_nm^-1": _Unit("q", "1/nm", "wavelength"),
    "k_A^-1": _Unit("k", "1/Å", "wavelength"),
}


def check_unit(unit: str) -> str:
    """``unit`` if it is one of :data:`RADIAL_UNITS`, else a ValueError listing them."""
    if unit not in RADIAL_UNITS:
        raise ValueError(f"unit: expected one of {list(RADIAL_UNITS)}, found {unit!r}")
    return unit


@dataclass(frozen=True, slots=True)
class ScatteringGeometry:
    """How a distance from the beam centre (detector pixels) maps to 2θ, q and k.

    Either ``camera_length`` and ``pixel_size`` (flat detector, ``2θ = atan(r p / L)``) or
    ``angle_per_px`` (linear, ``2θ = r a``) is set; ``wavelength`` (m) adds q and k. Build
    it with :meth:`from_calibration`.
    """

    angle_per_px: float | None = None
    camera_length: float | None = None
    pixel_size: float | None = None
    wavelength: float | None = None

    @classmethod
    def from_calibration(cls, calibration: Calibration | None) -> ScatteringGeometry | None:
        """The geometry a calibration implies; None without a detector angle."""
        if calibration is None or calibration.detector_angle is None:
            return None
        lam = calibration.wavelength
        if calibration.camera_length is not None and calibration.pixel_size is not None:
            return cls(camera_length=calibration.camera_length,
                       pixel_size=calibration.pixel_size, wavelength=lam)
        return cls(angle_per_px=calibration.detector_angle, wavelength=lam)

    @property
    def flat(self) -> bool:
        """True for the exact flat-detector mapping, False for the linear one."""
        return self.angle_per_px is None

    def units(self) -> tuple[str, ...]:
        """The radial units this geometry can give (always ``"px"``)."""
        return tuple(u for u, d in RADIAL_UNITS.items()
                     if d.needs != "wavelength" or self.wavelength is not None)

    def two_theta(self, r_px: np.ndarray) -> np.ndarray:
        """Scattering angle 2θ (rad) of distances ``r_px`` from the centre."""
        r = np.asarray(r_px, dtype=np.float64)
        if self.flat:
            return np.arctan(r * (self.pixel_size / self.camera_length))
        return r * self.angle_per_px

    def radius(self, two_theta: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`two_theta` (pixels; NaN at or beyond 90° on a flat detector)."""
        t = np.asarray(two_theta, dtype=np.float64)
        if self.flat:
            with np.errstate(invalid="ignore"):
                ok = (t >= 0) & (t < math.pi / 2)
                return np.where(ok, np.tan(np.where(ok, t, 0.0)), np.nan) * (
                    self.camera_length / self.pixel_size)
        return t / self.angle_per_px

    def to_unit(self, r_px: np.ndarray, unit: str) -> np.ndarray:
        """Distances ``r_px`` from the centre expressed in radial ``unit``."""
        if unit == "px":
            return np.asarray(r_px, dtype=np.float64)
        t = self.two_theta(r_px)
        if unit == "mrad":
            return t * 1e3
        if unit == "2th_deg":
            return np.rad2deg(t)
        s = 2 * np.sin(t / 2) / self._wavelength(unit)  # 2 sin(θ) / λ, 1/m
        return s * 2 * math.pi * 1e-9 if unit == "q_nm^-1" else s * 1e-10

    def from_unit(self, values: np.ndarray, unit: str) -> np.ndarray:
        """Inverse of :meth:`to_unit` (pixels; NaN where no scattering angle gives it)."""
        v = np.asarray(values, dtype=np.float64)
        if unit == "px":
            return v
        if unit == "mrad":
            return self.radius(v * 1e-3)
        if unit == "2th_deg":
            return self.radius(np.deg2rad(v))
        s = v / (2 * math.pi * 1e-9) if unit == "q_nm^-1" else v / 1e-10
        with np.errstate(invalid="ignore"):
            return self.radius(2 * np.arcsin(s * self._wavelength(unit) / 2))

    def _wavelength(self, unit: str) -> float:
        if self.wavelength is None:
            raise missing(unit, "energy", "a calibration without the beam energy",
                          "arr.fs.calibrate(energy='300 kV')")
        return self.wavelength


def missing(unit: str, field: str, found: str, example: str) -> Exception:
    """The CalibrationError for radial ``unit`` without calibration ``field``."""
    from framescope.calibration import CalibrationError  # pydantic: only on this path

    return CalibrationError(
        f"{field}: a radial unit of {unit!r} needs the calibration's {field}, found "
        f"{found}; calibrate the data first, e.g. {example}")


def require(calibration: Calibration | None, unit: str) -> ScatteringGeometry | None:
    """The geometry for binning in ``unit``, or a CalibrationError naming what is missing.

    None for ``"px"`` without a detector angle (pixels need no calibration).
    """
    geometry = ScatteringGeometry.from_calibration(calibration)
    if unit == "px":
        return geometry
    if geometry is None:
        found = ("uncalibrated data" if calibration is None
                 else "a calibration without the angle per detector pixel")
        raise missing(unit, "angle_per_px (or camera_length and pixel_size)", found,
                      "arr.fs.calibrate(angle_per_px='0.5 mrad')")
    if RADIAL_UNITS[unit].needs == "wavelength" and geometry.wavelength is None:
        raise missing(unit, "energy", "a calibration without the beam energy",
                      "arr.fs.calibrate(energy='300 kV')")
    return geometry


def azimuth(frame_shape: tuple[int, int], cy: float, cx: float) -> np.ndarray:
    """χ (degrees, ``(-180, 180]``) of every pixel centre around ``(cy, cx)``."""
    h, w = frame_shape
    return np.rad2deg(np.arctan2(np.arange(h, dtype=np.float64)[:, None] - cy,
                                 np.arange(w, dtype=np.float64)[None, :] - cx))
