"""``framescope.open`` and ``framescope.from_array``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import xarray as xr

from framescope.errors import ScanShapeError
from framescope.io._calibration import calibrate_opened
from framescope.io._lazy import DEFAULT_PARTITION_MIB, DIMS, default_chunks, to_dataarray
from framescope.io._registry import reader_for

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["from_array", "open"]


def open(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    scan: tuple[int, int] | None = None,
    sync_offset: int = 0,
    chunks: Any = None,
    partition_mib: float = DEFAULT_PARTITION_MIB,
    calibration: Calibration | Mapping[str, Any] | str | None = None,
    corrections: Any = None,
    **options: Any,
) -> xr.DataArray:
    """Open a 4D-STEM dataset lazily as ``(scan_y, scan_x, det_y, det_x)``.

    Only headers are read; the frames stay on disk until computed. The file is opened
    read-only and never written.

    Parameters
    ----------
    path : str or path-like
        File or directory (Zarr). Formats: raw binary (with ``shape``/``dtype`` or a JSON
        sidecar), ``.npy``, HDF5, DECTRIS ``*_master.h5``, Zarr, Merlin ``.mib``/``.hdr``,
        and any registered through the ``framescope.readers`` entry point group.
    format : str, optional
        Reader name (see ``framescope.io.available_readers()``); guessed when omitted.
    scan : (int, int), optional
        Scan shape for files that hold a flat frame stack (or to override the file's).
    sync_offset : int
        Skip this many leading frames (positive) or insert blank ones (negative).
    chunks : int, dict or tuple, optional
        Scan rows per partition, or a dask chunk spec. Default: whole scan rows,
        ``partition_mib`` MiB per partition.
    partition_mib : float
        Target partition size in MiB.
    calibration : Calibration, dict of fields, JSON str or None
        Physical calibration (``{"energy": "300 kV", "semiconv": "20 mrad"}``). Merged with
        what the file says (see docs/formats.md); the given fields win, and one that
        contradicts the file by more than 1 % is logged once.
    corrections : framescope.corrections.Corrections or False, optional
        Detector corrections every analysis of the array applies (see
        ``arr.fs.with_corrections``). Default: what the detector states in the file (a
        DECTRIS ``pixel_mask`` marks bad pixels; its ``flatfield`` is applied when the file
        says the detector did not); ``False``: none.
    **options
        Reader options, e.g. ``shape``, ``dtype``, ``offset`` (raw), ``dataset`` (HDF5/Zarr)
        or ``flip_y`` (MIB).

    Returns
    -------
    xarray.DataArray
        Lazy, dask-backed; attrs hold format, source, dtype and detector metadata. With a
        calibration (read or given) the coordinates are physical, as
        ``arr.fs.calibrate(...)`` gives them, and ``attrs["calibration"]`` is its JSON
        (``sources`` says where each field came from); without one, pixel indices.

    Raises
    ------
    framescope.errors.FramescopeError
        Subclasses name the file and what was expected versus found.
    framescope.calibration.CalibrationError
        A given or read calibration value that does not parse or contradicts another.

    Examples
    --------
    >>> arr = framescope.open("scan.mib", scan=(128, 128))  # doctest: +SKIP
    >>> arr.fs.virtual_image(framescope.masks.ring(cy=128, cx=128, r_in=40, r_out=90))
    ... # doctest: +SKIP
    """
    cls = reader_for(path, format)
    reader = cls(os.fspath(path), **options)
    arr = to_dataarray(
        reader, scan=scan, sync_offset=sync_offset, chunks=chunks,
        partition_mib=partition_mib, options=options,
    )
    arr = calibrate_opened(arr, reader, calibration)
    if corrections is False:
        return arr
    if corrections is None:
        detector = getattr(reader, "detector_arrays", None)
        if detector is None:
            return arr
        from framescope.corrections import from_detector

        corrections = from_detector(*detector(), where=os.fspath(path))
        if corrections is None:
            return arr
    from framescope.corrections import with_corrections

    return with_corrections(arr, corrections)


def from_array(
    data: np.ndarray | da.Array,
    *,
    scan: tuple[int, int] | None = None,
    chunks: Any = None,
    partition_mib: float = DEFAULT_PARTITION_MIB,
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Wrap frames already in memory (numpy) or in a dask array as a framescope DataArray.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        4D ``(scan_y, scan_x, det_y, det_x)``, or 3D ``(frames, det_y, det_x)`` with ``scan``.
    scan : (int, int), optional
        Scan shape for 3D input.
    chunks : optional
        Dask chunks; numpy input default is whole rows of about ``partition_mib`` MiB. Dask
        input keeps its chunks unless given.
    partition_mib : float
        Target partition size in MiB when ``chunks`` is not given (numpy input).
    attrs : dict, optional
        Extra attributes.

    Examples
    --------
    >>> import numpy as np
    >>> arr = from_array(np.zeros((4, 5, 16, 16), np.uint16))
    >>> arr.dims, arr.shape
    (('scan_y', 'scan_x', 'det_y', 'det_x'), (4, 5, 16, 16))
    """
    if data.ndim == 3:
        if scan is None:
            raise ScanShapeError("<array>", (0, 0), data.shape[0], "3D input needs scan=(ny, nx)")
        if scan[0] * scan[1] != data.shape[0]:
            raise ScanShapeError("<array>", tuple(scan), data.shape[0])
        data = data.reshape(*scan, *data.shape[1:])
    elif data.ndim != 4:
        raise ValueError(f"from_array: expected a 3D or 4D array, found shape {data.shape}")
    if isinstance(data, da.Array):
        if chunks is not None:
            data = data.rechunk(chunks)
    else:
        if chunks is None:
            chunks = default_chunks(data.shape, data.dtype.itemsize, None, partition_mib)
        data = da.from_array(data, chunks=chunks)
    coords = {
        dim: xr.Variable(dim, np.arange(n), attrs={"units": "px"})
        for dim, n in zip(DIMS, data.shape, strict=True)
    }
    base = {"format": "array", "source": "<memory>", "dtype": data.dtype.name}
    return xr.DataArray(data, dims=DIMS, coords=coords, attrs={**base, **(attrs or {})},
                        name="frames")
