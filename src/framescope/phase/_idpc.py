"""``idpc(arr)``: the iDPC phase of a dataset through the engine."""

from __future__ import annotations

from typing import Any, Literal

import xarray as xr

from framescope.engine import run
from framescope.udf._idpc import IDPC, integrate_gradient

__all__ = ["idpc", "integrate_gradient"]


def idpc(arr: xr.DataArray, *, cy: float | None = None, cx: float | None = None,
         radius: float | None = None, rotation: float | None = None,
         flip_y: bool | None = None, highpass: float = 0.0,
         boundary: Literal["mirror", "periodic"] = "mirror", **run_opts: Any) -> xr.Dataset:
    """Integrated DPC phase of ``arr`` (one pass of :class:`framescope.udf.IDPC`).

    Parameters
    ----------
    arr : xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames. For a phase in rad its calibration
        (``arr.fs.calibration``) needs ``energy``, ``angle_per_px`` (or ``pixel_size`` and
        ``camera_length``) and ``scan_step``; ``rotation`` and ``flip`` there give the scan
        rotation unless ``rotation``/``flip_y`` are given.
    cy, cx, radius, rotation, flip_y
        Centre of mass options (:class:`framescope.udf.CenterOfMass`); ``rotation`` in
        degrees.
    highpass : float
        Damping frequency in cycles per scan step (:func:`integrate_gradient`); 0 keeps
        all but the mean.
    boundary : {"mirror", "periodic"}
        Extension of the scan for the Fourier integration.
    **run_opts
        Passed to :func:`framescope.run` (``roi``, ``client``, ``progress``,
        ``corrections``, ...).

    Returns
    -------
    xarray.Dataset
        ``phase`` (rad, or ``"a.u."`` without the calibration above) over the scan
        coordinates, with every :class:`~framescope.udf.CenterOfMass` output beside it.
        ``attrs`` name the parameters in effect (``idpc_rotation`` in degrees, ...).

    Raises
    ------
    ValueError
        Bad parameters (negative ``highpass``, unknown ``boundary``, a radius that holds
        no detector pixel).

    See Also
    --------
    framescope.udf.IDPC : the UDF, for :func:`framescope.iter_run` (progressive phase) and
        live streams.

    Examples
    --------
    >>> from framescope.datasets import synthetic
    >>> arr = synthetic(scan=(8, 8), det=(32, 32), calibrated=True)
    >>> ds = idpc(arr, client="inline")
    >>> ds["phase"].attrs["units"]
    'rad'
    """
    udf = IDPC(cy=cy, cx=cx, radius=radius, rotation=rotation, flip_y=flip_y,
               highpass=highpass, boundary=boundary)
    arr = arr.fs._use(run_opts)  # corrections attached: the geometry below is corrected
    res = run(udf, arr, **run_opts)
    used = udf.resolved(*arr.fs._geometry(arr))  # what the UDF saw: crop, binning
    used.update(highpass=highpass, boundary=boundary)
    res.attrs.update({f"idpc_{k}": ("none" if v is None else v) for k, v in used.items()})
    return res
