"""``ssb(arr)``: single-sideband ptychography of a dataset through the engine."""

from __future__ import annotations

import math
from typing import Any, Literal

import xarray as xr

from framescope.engine import run
from framescope.udf._base import Meta
from framescope.udf._ssb import SSB, SSBGeometry

__all__ = ["ssb", "ssb_geometry_of"]


def ssb_geometry_of(arr: xr.DataArray, udf: SSB) -> SSBGeometry:
    """The geometry ``udf`` runs with on ``arr`` (after its corrections' crop and binning)."""
    frame_shape, cal = arr.fs._geometry(arr)
    meta = Meta(tuple(arr.shape[:2]), tuple(frame_shape), arr.dtype, calibration=cal)
    return udf.geometry(meta)


def ssb(arr: xr.DataArray, *, defocus: float | str = 0.0, semiconv: float | str | None = None,
        rotation: float | None = None, flip: bool | None = None, bin: int | None = None,
        max_memory: int = 1 << 30, object: Literal["phase", "complex"] = "phase",
        **run_opts: Any) -> xr.Dataset:
    """Single-sideband ptychography of ``arr``: the complex object over the scan.

    One pass of :class:`framescope.udf.SSB`: every frame's bright-field pixels placed in a
    stack over the scan, whose FFT over the scan is summed over each frequency's trotters,
    so the image also fills in with :func:`framescope.iter_run` and on live streams.

    Parameters
    ----------
    arr : xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames whose calibration (``arr.fs.calibrate``)
        has ``energy``, ``angle_per_px`` (or ``pixel_size`` and ``camera_length``),
        ``semiconv`` and ``scan_step``; its ``rotation`` and ``flip`` are used unless given.
    defocus : float or str
        Probe defocus, m or ``"12 nm"``; ``chi(k) = pi * lambda * defocus * |k|^2``.
    semiconv : float or str, optional
        Convergence semi-angle overriding the calibration's (rad or ``"20 mrad"``).
    rotation : float, optional
        Scan rotation in degrees overriding the calibration's.
    flip : bool, optional
        Detector y flip overriding the calibration's.
    bin : int, optional
        Detector binning; default the smallest that keeps the stack, its spectrum and the
        weights within ``max_memory`` bytes.
    object : {"phase", "complex"}
        A weak phase object (default: both trotters, half the work) or any weak object
        (one sideband per frequency; adds ``amplitude``). See :class:`framescope.udf.SSB`.
    **run_opts
        Passed to :func:`framescope.run` (``roi``, ``client``, ``progress``,
        ``corrections``, ...).

    Returns
    -------
    xarray.Dataset
        ``phase`` (rad), ``bright_field`` (and ``amplitude`` for ``object="complex"``)
        over the scan; ``attrs`` hold
        the geometry in effect (``ssb_defocus_m``, ``ssb_bin``, ``ssb_bf_pixels``,
        ``ssb_frequencies``, ``ssb_memory_bytes``, ...).

    Examples
    --------
    >>> from framescope.datasets import synthetic
    >>> arr = synthetic(scan=(16, 16), det=(32, 32), semiconv=6, calibrated=True)
    >>> ds = ssb(arr, client="inline", progress=False)
    >>> ds["phase"].attrs["units"]
    'rad'
    """
    udf = SSB(defocus=defocus, semiconv=semiconv, rotation=rotation, flip=flip, bin=bin,
              max_memory=max_memory, object=object)
    arr = arr.fs._use(run_opts)  # corrections attached: the geometry below is corrected
    res = run(udf, arr, **run_opts)
    g = ssb_geometry_of(arr, udf)
    plan = udf.plan(g)
    res.attrs.update({
        "ssb_defocus_m": g.defocus, "ssb_semiconv_rad": g.semiconv, "ssb_bin": g.bin,
        "ssb_rotation_deg": math.degrees(g.rotation), "ssb_flip": int(g.flip),
        "ssb_bf_pixels": int(plan.pixels.size), "ssb_frequencies": int(plan.q_flat.size),
        "ssb_memory_bytes": int(g.memory_bytes(plan.pixels.size, plan.q_flat.size)),
        "ssb_object": object,
    })
    return res
