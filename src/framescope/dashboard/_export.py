"""Export: the dashboard's results as a NetCDF4/HDF5 file, and the same analysis as code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import xarray as xr

from framescope._version import __version__
from framescope.errors import MaskError
from framescope.masks import MaskStack

if TYPE_CHECKING:
    from framescope.dashboard._state import DashboardState

__all__ = ["notebook_code", "results_bytes", "results_dataset", "write_results"]


def _valid(state: DashboardState) -> dict[str, Any]:
    out = {}
    for d in state.detectors:
        try:
            out[d.name] = d.spec()
        except MaskError:
            continue
    return out


def notebook_code(state: DashboardState) -> str:
    """Notebook code that recomputes what the dashboard shows, with ``arr`` the same data.

    Examples
    --------
    >>> print(notebook_code(state))  # doctest: +SKIP
    import framescope as fs
    <BLANKLINE>
    masks = fs.masks.MaskStack({  # detector pixels
        'bf': fs.masks.disk(cy=64.0, cx=64.0, r=16.0),
    })
    images = arr.fs.virtual_image(masks)  # (scan_y, scan_x, mask), masks JSON in attrs
    bf = arr.fs.virtual_image(fs.masks.disk(cy=64.0, cx=64.0, r=16.0))

    For a calibrated array the code calibrates ``arr`` first (``arr.fs.calibrate(...)``
    with the dashboard's calibration, SI units), so the results have the same physical
    coordinates; masks stay in detector pixels.
    """
    specs = _valid(state)
    lines = ["import framescope as fs", "", "# arr: the DataArray shown in the dashboard"]
    calibration = _calibrate_code(state)
    if calibration:
        lines.append(calibration)
    lines.append("masks = fs.masks.MaskStack({  # detector pixels")
    codes = {}
    for d in state.detectors:
        if d.name in specs:
            codes[d.name] = d.code()
            lines.append(f"    {d.name!r}: {codes[d.name]},")
        else:
            lines.append(f"    # {d.name!r}: invalid mask")
    lines += ["})", "images = arr.fs.virtual_image(masks)  # (scan_y, scan_x, mask), masks JSON "
              "in attrs"]
    sel = state.selected
    if sel in codes:
        var = sel if sel.isidentifier() else "image"
        lines.append(f"{var} = arr.fs.virtual_image({codes[sel]})")
    if state.com_enabled:
        args = ", ".join(f"{k}={v!r}" for k, v in state.com_params().items())
        lines.append(f"com = arr.fs.com({args})")
    if state.frame_mode == "picked":
        y, x = state.picked
        lines.append(f"frame = arr.fs.pick({int(y)}, {int(x)})")
    elif state.frame_mode in ("mean", "max"):
        lines.append("frame = arr.fs.mean_frame()" if state.frame_mode == "mean"
                     else "frame = arr.max(dim=('scan_y', 'scan_x')).compute()")
    return "\n".join(lines) + "\n"


def _calibrate_code(state: DashboardState) -> str:
    """``arr = arr.fs.calibrate(...)`` giving ``arr`` the dashboard's calibration ('' for
    none)."""
    cal = state.calibration
    if cal is None:
        return ""
    fields = cal.model_dump(exclude_defaults=True, exclude={"sources"})
    if not fields:
        return ""
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"arr = arr.fs.calibrate({args})  # SI units: eV, rad, m; center in px"


def results_dataset(state: DashboardState) -> xr.Dataset:
    """Current results: ``virtual_image`` (scan_y, scan_x, mask) with the masks JSON and the
    framescope version in attrs (as ``arr.fs.virtual_image``), the detector-view ``frame``
    and, once computed, the COM maps (``com_*``) with their parameters in attrs.

    Images still being computed are included as they are (NaN where not done yet);
    ``virtual_image_done`` gives each one's completed fraction. Coordinates are the
    array's, with their ``units`` attrs (nm and mrad for a calibrated array), and
    ``attrs["calibration"]`` its calibration.
    """
    arr = state.arr
    specs = _valid(state)
    names = list(specs)
    ny, nx = state.scan_shape
    scan = {d: arr.coords[d].variable.copy() for d in ("scan_y", "scan_x")}  # with attrs
    images, done = [], []
    for name in names:
        vi = state.image(name)
        ok = vi is not None and vi.spec_key == specs[name].key
        images.append(vi.image if ok else np.full((ny, nx), np.nan, np.float32))
        done.append(vi.done if ok else 0.0)
    data = np.stack(images, axis=-1) if images else np.zeros((ny, nx, 0), np.float32)
    masks_json = MaskStack(specs).to_json() if specs else ""
    ds = xr.Dataset(
        {"virtual_image": (("scan_y", "scan_x", "mask"), data, {
            "masks": masks_json, "framescope_version": __version__,
            "source": arr.attrs.get("source", "")}),
         "virtual_image_done": (("mask",), np.asarray(done, dtype=np.float64))},
        coords={**scan, "mask": names},
        attrs={"framescope_version": __version__, "source": arr.attrs.get("source", ""),
               "masks": masks_json, "code": notebook_code(state)},
    )
    if state.calibration is not None:
        ds.attrs["calibration"] = state.calibration.to_json()
    frame = state.results.get("frame")
    if frame is not None:
        det = {d: arr.coords[d].variable.copy() for d in ("det_y", "det_x")}
        ds["frame"] = xr.DataArray(np.asarray(frame.image), dims=("det_y", "det_x"),
                                   coords=det, attrs={"mode": frame.mode,
                                                      "label": frame.label,
                                                      "done": frame.done})
    com = state.results.get("com")
    if com is not None:
        for key, var in com.data.data_vars.items():
            if key == "done":
                continue
            name = key if key.startswith("com_") else f"com_{key}"
            ds[name] = xr.DataArray(np.asarray(var), dims=("scan_y", "scan_x"),
                                    attrs=dict(var.attrs))  # units
        ds.attrs.update({f"com_{k}": v for k, v in state.com_params().items()})
        ds.attrs["com_done"] = com.done
    return ds


def _netcdf_safe(ds: xr.Dataset) -> xr.Dataset:
    """NetCDF attributes cannot be None or bool."""
    ds = ds.copy()
    for obj in (ds, *ds.variables.values()):
        obj.attrs = {k: (int(v) if isinstance(v, bool | np.bool_) else "none" if v is None
                         else v) for k, v in obj.attrs.items()}
    return ds


def write_results(state: DashboardState, path: str | os.PathLike[str]) -> Path:
    """Write :func:`results_dataset` to ``path`` as NetCDF4 (an HDF5 file: ``.nc`` or
    ``.h5``); returns the path. Read back with ``xarray.open_dataset(path)``."""
    out = Path(path)
    # numpy data: no scheduler needed, whatever client the process has (or has not) set up
    with dask.config.set(scheduler="synchronous"):
        _netcdf_safe(results_dataset(state)).to_netcdf(out, engine="h5netcdf")
    return out


def results_bytes(state: DashboardState) -> bytes:
    """The file :func:`write_results` writes, as bytes (for a browser download)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_results(state, Path(tmp) / "results.nc").read_bytes()
