"""Quantities with units, beam wavelengths and the detector-angle rule: no pydantic here,
so reading headers and parsing units stays cheap (the model imports these)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from framescope.errors import FramescopeError

__all__ = ["CalibrationError", "displaced", "electron_wavelength", "energy_from_wavelength",
           "parse_quantity", "photon_wavelength"]

# CODATA 2018
_H = 6.62607015e-34  # J s
_M0 = 9.1093837015e-31  # kg
_E = 1.602176634e-19  # C
_C = 299792458.0  # m/s

# unit → (quantity, factor to SI); the SI units are eV, rad and m
_UNITS: dict[str, tuple[str, float]] = {
    "ev": ("energy", 1.0), "kev": ("energy", 1e3), "mev": ("energy", 1e6),
    "v": ("energy", 1.0), "kv": ("energy", 1e3),  # accelerating voltage, as users say
    "rad": ("angle", 1.0), "mrad": ("angle", 1e-3), "urad": ("angle", 1e-6),
    "µrad": ("angle", 1e-6), "deg": ("angle", math.pi / 180), "°": ("angle", math.pi / 180),
    "m": ("length", 1.0), "cm": ("length", 1e-2), "mm": ("length", 1e-3),
    "um": ("length", 1e-6), "µm": ("length", 1e-6), "nm": ("length", 1e-9),
    "a": ("length", 1e-10), "å": ("length", 1e-10), "angstrom": ("length", 1e-10),
    "pm": ("length", 1e-12),
}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S*)\s*$")


class CalibrationError(FramescopeError, ValueError):
    """A calibration field that does not parse, is out of range or contradicts another."""


def parse_quantity(value: Any, quantity: str, field: str) -> float:
    """``value`` in SI units: a number (already SI) or a string with a unit (``"20 mrad"``).

    Raises
    ------
    CalibrationError
        Not a number, an unknown unit, or a unit of another quantity.
    """
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = _NUMBER.match(value)
        if m is not None:
            number, unit = float(m.group(1)), m.group(2).lower()
            if not unit:
                return number
            kind, factor = _UNITS.get(unit, (None, 0.0))
            if kind == quantity:
                return number * factor
            known = sorted(u for u, (k, _) in _UNITS.items() if k == quantity)
            raise CalibrationError(f"{field}: expected a {quantity} unit ({', '.join(known)}),"
                                   f" found {m.group(2)!r} in {value!r}")
    raise CalibrationError(f"{field}: expected a number in SI units or a string with a "
                           f"{quantity} unit such as '20 mrad', found {value!r}")


def electron_wavelength(energy_ev: float) -> float:
    """Relativistic electron wavelength (m) for a kinetic energy in eV (200 kV: 2.508 pm)."""
    if not energy_ev > 0:
        raise CalibrationError(f"energy: expected a positive energy in eV, found {energy_ev}")
    e = energy_ev * _E
    return _H / math.sqrt(2 * _M0 * e * (1 + e / (2 * _M0 * _C**2)))


def photon_wavelength(energy_ev: float) -> float:
    """X-ray photon wavelength (m) for a photon energy in eV (12.398 keV: 1 Å)."""
    if not energy_ev > 0:
        raise CalibrationError(f"energy: expected a positive energy in eV, found {energy_ev}")
    return _H * _C / (energy_ev * _E)


def energy_from_wavelength(wavelength: float,
                           radiation: Literal["electron", "xray"] = "electron") -> float:
    """The beam energy (eV) of a wavelength (m): inverse of :func:`electron_wavelength`
    (kinetic energy, relativistic) or :func:`photon_wavelength`."""
    if not wavelength > 0:
        raise CalibrationError(f"wavelength: expected a positive length, found {wavelength}")
    if radiation == "xray":
        return _H * _C / (wavelength * _E)
    # p = h / λ;  E_kin = sqrt((pc)² + (m c²)²) - m c²
    pc, mc2 = _H / wavelength * _C, _M0 * _C**2
    return (math.sqrt(pc * pc + mc2 * mc2) - mc2) / _E


def displaced(fields: Iterable[str]) -> set[str]:
    """The fields that setting ``fields`` replaces in an existing calibration.

    Each field replaces itself; and the detector angle is ``angle_per_px`` or ``pixel_size
    / camera_length``: a new ``angle_per_px`` replaces the camera length (a pixel size is a
    fact of the detector and stays), a new camera length or pixel size replaces
    ``angle_per_px``. Otherwise a user's angle would contradict a file's camera length,
    which a :class:`Calibration` refuses.
    """
    top = set(fields)
    out = set(top)
    if "angle_per_px" in top:
        out.add("camera_length")
    elif top & {"camera_length", "pixel_size"}:
        out.add("angle_per_px")
    return out
