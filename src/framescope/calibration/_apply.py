"""Put a calibration on a DataArray: physical coordinates and ``attrs["calibration"]``.

One place for what ``arr.fs.calibrate(...)`` and ``framescope.open(..., calibration=...)``
both do, so an array calibrated either way has the same coordinates and attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import xarray as xr

if TYPE_CHECKING:
    from framescope.calibration._model import Calibration

__all__ = ["with_calibration"]


def with_calibration(arr: xr.DataArray, cal: Calibration) -> xr.DataArray:
    """``arr`` (same data, not read or copied) with the coordinates of ``cal``.

    Parameters
    ----------
    arr : xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames.
    cal : Calibration
        The calibration; its JSON becomes ``attrs["calibration"]``.

    Returns
    -------
    xarray.DataArray
        Scan axes in nm, detector axes as scattering angle in mrad from the centre where
        calibrated, pixel indices otherwise (see :meth:`Calibration.coords`).
    """
    coords = {name: xr.Variable(d, values, attrs)
              for name, (d, values, attrs) in cal.coords(arr.shape).items()}
    # a recalibration without an energy leaves no stale spatial frequencies behind
    out = arr.drop_vars([k for k in ("k_y", "k_x") if k in arr.coords and k not in coords])
    out = out.assign_coords(coords)
    out.attrs = {**arr.attrs, "calibration": cal.to_json()}
    return out
