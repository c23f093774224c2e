"""Mask units: detector pixels, scattering angle or spatial frequency, and their conversion.

A physical mask holds its numbers in one of :data:`UNITS` and becomes the pixel mask it
implies once three plain numbers are known: the scattering angle per pixel, the detector
position of the unscattered beam and (for spatial frequencies) the wavelength. Nothing here
imports the calibration package (masks depend on ``framescope.errors`` only): a calibration
is read by duck typing (:class:`CalibrationLike`).

Conventions
-----------
* ``px = centre + value / angle_per_px`` on each axis, ``y`` first; lengths (radii)
  ``r_px = value / angle_per_px``. ``(0, 0)`` in physical units is the beam centre.
* Angles are detector-frame scattering angles: no scan rotation or flip is applied (those
  relate the *scan* to the detector, as in ``Calibration.coords``).
* Spatial frequency ``k`` is ``1/d`` (no ``2π``): the angle is ``θ = k·λ``, so a ring at
  ``k = 1/d`` collects the Bragg reflection of planes of spacing ``d`` (small angles).
* Converted pixel values are rounded to 1e-9 px, so ``20 mrad`` at ``0.5 mrad/px`` is
  exactly 40 px and float noise never moves a boundary pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from framescope.errors import MaskError

__all__ = ["UNITS", "CalibrationLike", "Scale", "scale", "scale_from", "unit_name"]

#: the units a mask may be given in; the first is the default
UNITS = ("px", "mrad", "rad", "1/Å", "1/nm")

_ALIASES = {
    "px": "px", "pixel": "px", "pixels": "px",
    "mrad": "mrad", "rad": "rad",
    "1/å": "1/Å", "1/a": "1/Å", "1/angstrom": "1/Å", "å^-1": "1/Å", "a^-1": "1/Å",
    "1/nm": "1/nm", "nm^-1": "1/nm",
}
# units -> (radians per unit, per metre of wavelength?): θ = value * factor (* λ)
_TO_RAD = {"mrad": (1e-3, False), "rad": (1.0, False), "1/Å": (1e10, True),
           "1/nm": (1e9, True)}


def unit_name(kind: str, value: Any) -> str:
    """The canonical name of mask units ``value`` (``"1/A"`` → ``"1/Å"``), or a MaskError."""
    name = _ALIASES.get(value.strip().lower()) if isinstance(value, str) else None
    if name is None:
        raise MaskError(f"{kind}: units must be one of {list(UNITS)}, found {value!r}")
    return name


@runtime_checkable
class CalibrationLike(Protocol):
    """What resolving a physical mask reads of a calibration (``framescope.calibration``'s
    :class:`~framescope.calibration.Calibration` has it)."""

    @property
    def detector_angle(self) -> float | None: ...

    @property
    def wavelength(self) -> float | None: ...

    def centre(self, det_shape: tuple[int, int]) -> tuple[float, float]: ...


def _snap(v: float) -> float:
    return round(v, 9) + 0.0  # -0.0 -> 0.0 (equal shapes, equal keys)


@dataclass(frozen=True, slots=True)
class Scale:
    """Maps one unit to detector pixels: ``y -> cy + y * per_unit``, ``r -> r * per_unit``."""

    cy: float
    cx: float
    per_unit: float  # pixels per unit

    def y(self, v: float) -> float:
        return _snap(self.cy + v * self.per_unit)

    def x(self, v: float) -> float:
        return _snap(self.cx + v * self.per_unit)

    def r(self, v: float) -> float:
        return _snap(v * self.per_unit)


def _finite(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MaskError(f"{name}: expected a real number, found {value!r}") from None
    if not math.isfinite(out):
        raise MaskError(f"{name}: expected a finite number, found {out}")
    return out


def scale(units: str, angle_per_px: float, center: tuple[float, float],
          wavelength: float | None = None) -> Scale:
    """The :class:`Scale` of ``units`` for a detector of ``angle_per_px`` (rad) with the beam
    at ``center = (cy, cx)`` px; ``wavelength`` (m) for spatial frequencies.

    Raises
    ------
    MaskError
        A non-positive or non-finite angle or wavelength, a bad centre, or a spatial
        frequency without a wavelength.
    """
    units = unit_name("mask", units)
    a = _finite("angle_per_px", angle_per_px)
    if not a > 0:
        raise MaskError(f"angle_per_px: expected a positive angle per pixel (rad), found {a}")
    try:
        cy, cx = (_finite("center", v) for v in center)
    except (TypeError, ValueError):
        raise MaskError(f"center: expected (cy, cx) in detector pixels, found {center!r}"
                        ) from None
    if units == "px":
        return Scale(0.0, 0.0, 1.0)  # pixels stay where they are
    factor, per_wavelength = _TO_RAD[units]
    if per_wavelength:
        if wavelength is None:
            raise MaskError(f"a mask in {units} needs the wavelength (theta = k * lambda): "
                            "give the beam energy")
        lam = _finite("wavelength", wavelength)
        if not lam > 0:
            raise MaskError(f"wavelength: expected a positive length (m), found {lam}")
        factor *= lam
    return Scale(cy, cx, factor / a)


def scale_from(units: str, calibration: CalibrationLike | None, det_shape: tuple[int, int],
               what: str) -> Scale:
    """:func:`scale` with the numbers of ``calibration``; ``what`` names the mask in errors,
    which say how to calibrate."""
    angle = None if calibration is None else calibration.detector_angle
    if angle is None:
        found = "uncalibrated data" if calibration is None else \
            "a calibration without the angle per detector pixel"
        raise MaskError(
            f"{what} is in {units}, found {found}: calibrate the data first, e.g. "
            "arr.fs.calibrate(angle_per_px='0.5 mrad') (or camera_length and pixel_size; "
            "--angle-per-px on the command line), or convert the mask with "
            "spec.to_pixels(angle_per_px, center, wavelength)")
    lam = None
    if units in ("1/Å", "1/nm"):
        lam = calibration.wavelength  # type: ignore[union-attr]
        if lam is None:
            raise MaskError(
                f"{what} is in {units} (spatial frequency, theta = k * lambda), found a "
                "calibration without the beam energy: calibrate it, e.g. "
                "arr.fs.calibrate(energy='300 kV') (--energy on the command line)")
    return scale(units, angle, calibration.centre(det_shape), lam)  # type: ignore[union-attr]
