"""Physical calibration: the :class:`Calibration` model and the helpers that measure it.

A :class:`Calibration` holds SI numbers (eV, rad, m; the detector centre in pixels), is
validated on construction, round-trips through JSON (``arr.attrs["calibration"]``) and gives
the physical coordinates of every axis. ``arr.fs.calibrate(...)`` applies one to a
DataArray. Names are imported on first use: units, wavelengths and header parsing do not
import pydantic (~80 ms); the model and the helpers do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framescope.calibration._apply import with_calibration
    from framescope.calibration._beam import beam_energy
    from framescope.calibration._combine import combine
    from framescope.calibration._descan import DescanFit, descan_fit
    from framescope.calibration._disk import DiskFit, bf_disk
    from framescope.calibration._dpc import DpcRotation, dpc_rotation
    from framescope.calibration._model import Calibration
    from framescope.calibration._quantities import (
        CalibrationError,
        displaced,
        electron_wavelength,
        energy_from_wavelength,
        parse_quantity,
        photon_wavelength,
    )

_WHERE = {
    "Calibration": "_model", "combine": "_combine", "beam_energy": "_beam",
    "DescanFit": "_descan", "descan_fit": "_descan", "DiskFit": "_disk", "bf_disk": "_disk",
    "DpcRotation": "_dpc", "dpc_rotation": "_dpc", "with_calibration": "_apply",
    **dict.fromkeys(("CalibrationError", "displaced", "electron_wavelength",
                     "energy_from_wavelength", "parse_quantity", "photon_wavelength"),
                    "_quantities"),
}

__all__ = [
    "Calibration",
    "CalibrationError",
    "DescanFit",
    "DiskFit",
    "DpcRotation",
    "beam_energy",
    "bf_disk",
    "combine",
    "descan_fit",
    "displaced",
    "dpc_rotation",
    "electron_wavelength",
    "energy_from_wavelength",
    "parse_quantity",
    "photon_wavelength",
    "with_calibration",
]
assert sorted(__all__) == sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'framescope.calibration' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"framescope.calibration.{module}"), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return __all__
