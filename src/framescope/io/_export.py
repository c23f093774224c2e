"""Write any framescope DataArray to a file, block by block, with a progress bar; write
analysis results to NetCDF."""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from framescope.io._base import jsonable
from framescope.io._lazy import source_of

__all__ = ["WRITERS", "iter_frame_blocks", "save", "write_netcdf"]

# attrs that describe the opened copy, not the data: never written as metadata
_NOT_METADATA = frozenset({"source", "format", "dtype", "n_frames", "sync_offset"})

# format → writer "module:function"; each takes (path, blocks, *, n_frames, frame_shape, dtype,
# scan, ...) and streams blocks of frames
WRITERS = {
    "raw": "framescope.io._write:write_raw",
    "npy": "framescope.io._write:write_npy",
    "zarr": "framescope.io._write:write_zarr",
    "hdf5": "framescope.io._hdf5_write:write_hdf5",
    "dectris": "framescope.io._hdf5_write:write_dectris",
    "mib": "framescope.io._mib_write:write_mib",
}


def iter_frame_blocks(
    arr: xr.DataArray, block_mib: float = 64.0, workers: int = 2
) -> Iterator[np.ndarray]:
    """Yield the frames of ``arr`` in scan order as ``(k, det_y, det_x)`` blocks.

    Blocks are produced by a small thread pool a few blocks ahead of the consumer (reading or
    simulating overlaps writing), and in order; memory stays at about
    ``(workers + 1) * block_mib``.
    """
    ny, nx, h, w = arr.shape
    n = ny * nx
    per = max(1, int(block_mib * 2**20 // (h * w * arr.dtype.itemsize)))
    source = source_of(arr)
    flat = None if source is not None else arr.data.reshape(n, h, w)

    def load(start: int) -> np.ndarray:
        stop = min(start + per, n)
        if source is not None:
            return source.read_positions(start, stop)
        return np.asarray(flat[start:stop].compute(scheduler="sync"))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        starts = iter(range(0, n, per))
        pending = [pool.submit(load, s) for _, s in zip(range(workers + 1), starts, strict=False)]
        while pending:
            block = pending.pop(0).result()
            nxt = next(starts, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            yield block


def save(
    arr: xr.DataArray,
    path: str | os.PathLike[str],
    format: str,
    *,
    progress: bool = True,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write ``arr`` (any framescope DataArray) to ``path`` in ``format``.

    Parameters
    ----------
    arr : xarray.DataArray
        ``(scan_y, scan_x, det_y, det_x)`` frames, lazy or in memory.
    path : path-like
        Output file (or directory for Zarr); never overwritten unless ``overwrite``.
    format : {"raw", "npy", "zarr", "hdf5", "dectris", "mib"}
        Output format.
    progress : bool
        Show a ``tqdm`` progress bar (in notebooks too).
    **options
        Passed to the writer (e.g. ``compression="bslz4"`` for hdf5/dectris).
    """
    try:
        target = WRITERS[format]
    except KeyError:
        raise ValueError(f"unknown output format {format!r}; expected one of {list(WRITERS)}")\
            from None
    module, _, name = target.partition(":")
    writer = getattr(importlib.import_module(module), name)
    if "metadata" in inspect.signature(writer).parameters and "metadata" not in options:
        # carry what the source knows (detector facts, simulation parameters) into the copy
        options["metadata"] = jsonable(
            {k: v for k, v in arr.attrs.items() if k not in _NOT_METADATA})
    from tqdm.auto import tqdm  # here, not at import: in a notebook it loads ipywidgets

    ny, nx, h, w = arr.shape
    bar = tqdm(total=arr.nbytes, unit="B", unit_scale=True, desc=f"{format} {Path(path).name}",
               disable=not progress)

    def blocks() -> Iterator[np.ndarray]:
        for block in iter_frame_blocks(arr):
            yield block
            bar.update(block.nbytes)

    try:
        return writer(
            path, blocks(), n_frames=ny * nx, frame_shape=(h, w), dtype=arr.dtype,
            scan=(ny, nx), overwrite=overwrite, **options,
        )
    finally:
        bar.close()


def _netcdf_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes NetCDF can hold: bools as 0/1, None as "none", nested values as JSON."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bool | np.bool_):
            value = int(value)
        elif value is None:
            value = "none"
        elif isinstance(value, dict) or (isinstance(value, list | tuple) and not all(
                isinstance(v, int | float | str) and not isinstance(v, bool) for v in value)):
            value = json.dumps(value, default=str)
        out[key] = value
    return out


def write_netcdf(
    results: xr.Dataset | xr.DataArray,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write analysis results (or any small Dataset) to NetCDF4 with CF-style attributes.

    Coordinates keep their ``units`` and ``long_name`` (calibrated ones: ``nm``, ``mrad``),
    the data's calibration JSON is the global attribute ``calibration`` (also when it sat on
    a DataArray), and attributes NetCDF cannot hold are converted (bools to 0/1, None to
    ``"none"``, dicts to JSON). The file is HDF5 (``h5netcdf``): read it back with
    ``xarray.open_dataset(path)`` or the ``netCDF4`` library.

    Parameters
    ----------
    results : xarray.Dataset or xarray.DataArray
        In memory or lazy (computed while writing).
    path : path-like
        Output file (``.nc`` or ``.h5``); never replaced unless ``overwrite``.
    overwrite : bool
        Replace an existing file (else :class:`FileExistsError`).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from framescope.io._write import check_new

    out = check_new(path, overwrite)
    if isinstance(results, xr.DataArray):
        cal = results.attrs.get("calibration")
        results = results.to_dataset(name=results.name or "data")
        if cal is not None:
            results.attrs.setdefault("calibration", cal)
    ds = results.copy()  # shallow: only attrs change
    ds.attrs = _netcdf_attrs(ds.attrs)
    for name, var in ds.variables.items():
        var.attrs = _netcdf_attrs(var.attrs)
        if name in ds.coords:  # CF: coordinates have no fill value
            var.encoding["_FillValue"] = None
    ds.to_netcdf(out, engine="h5netcdf")
    return out
