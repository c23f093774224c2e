"""Physical calibration: the :class:`Calibration` model and the helpers that measure it.

A :class:`Calibration` holds SI numbers (eV, rad, m; the detector centre in pixels), is
validated on construction, round-trips through JSON (``arr.attrs["calibration"]``) and gives
the physical coordinates of every axis. ``arr.fs.calibrate(...)`` applies one to a
DataArray.
"""

from framescope.calibration._beam import beam_energy
from framescope.calibration._combine import combine
from framescope.calibration._descan import DescanFit, descan_fit
from framescope.calibration._disk import DiskFit, bf_disk
from framescope.calibration._dpc import DpcRotation, dpc_rotation
from framescope.calibration._model import (
    Calibration,
    CalibrationError,
    electron_wavelength,
    energy_from_wavelength,
    parse_quantity,
    photon_wavelength,
)

__all__ = ["Calibration", "CalibrationError", "DescanFit", "DiskFit", "DpcRotation",
           "beam_energy", "bf_disk", "combine", "descan_fit", "dpc_rotation",
           "electron_wavelength", "energy_from_wavelength", "parse_quantity",
           "photon_wavelength"]
