"""Counted electrons in stempy's sparse HDF5 layout (version 3), written and read.

The layout, as stempy's ``SparseArray.write_to_hdf5`` / ``from_hdf5`` (stempy 3.x) use it::

    /                              attrs: version = 3
    /electron_events/frames        vlen uint32, shape (n_positions * frames_per_position,):
                                   the flat pixel indices (det_y * det_x_size + det_x) of
                                   the events of every frame, scan position after scan
                                   position (row-major), frames of a position together;
                                   attrs: Nx = det_y size, Ny = det_x size (sic: stempy's
                                   frame Nx is the first, row axis)
    /electron_events/scan_positions  int, shape (n_positions,): 0 .. n - 1;
                                   attrs: Nx = scan_x size, Ny = scan_y size
    /metadata                      group of free attributes (stempy keeps a dict here)

Versions 1 and 2 (read only) store one frame per entry and its scan position in
``scan_positions``. framescope adds, ignored by stempy: ``/electron_events/centroids``
(float32, ``(n_events, 2)``, the ``(y, x)`` of every event in the order of ``frames``) and,
in ``/metadata``, ``framescope_thresholds`` and ``calibration`` as JSON attributes.

Several frames per scan position (stempy's multi-frame scans) are read as one frame holding
all their events.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from framescope.counting._counted import CountedData, CountingError
from framescope.counting._thresholds import Thresholds
from framescope.errors import FormatError

__all__ = ["load_counted", "save_counted"]

VERSION = 3


def save_counted(counted: CountedData, path: str | os.PathLike[str], *,
                 overwrite: bool = False) -> Path:
    """Write counted electrons to an HDF5 file in stempy's sparse layout (version 3).

    Parameters
    ----------
    counted : CountedData
        The events.
    path : str or PathLike
        The file to create.
    overwrite : bool
        Replace an existing file (otherwise that is an error).

    Returns
    -------
    Path
        The file written; ``stempy.io.load_electron_counts`` reads it.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
    frames = np.empty(counted.n_frames, dtype=object)
    frames[:] = np.split(counted.indices, counted.offsets[1:-1])
    with h5py.File(path, "w") as f:
        f.attrs["version"] = VERSION
        group = f.create_group("electron_events")
        positions = group.create_dataset("scan_positions", data=np.arange(counted.n_frames))
        positions.attrs["Nx"] = counted.scan_shape[1]
        positions.attrs["Ny"] = counted.scan_shape[0]
        dset = group.create_dataset("frames", (counted.n_frames,),
                                    dtype=h5py.vlen_dtype(np.uint32))
        dset[...] = frames
        dset.attrs["Nx"] = counted.frame_shape[0]
        dset.attrs["Ny"] = counted.frame_shape[1]
        if counted.centroids is not None:
            cents = group.create_dataset("centroids", data=counted.centroids)
            cents.attrs["description"] = ("(y, x) of every event in detector px, pixel "
                                          "centres on integers, in the order of frames")
        meta = f.create_group("metadata")
        if counted.thresholds is not None:
            meta.attrs["framescope_thresholds"] = counted.thresholds.to_json()
        if counted.calibration is not None:
            meta.attrs["calibration"] = counted.calibration.to_json()
    return path


def _attr(obj: h5py.HLObject, name: str, path: Path) -> int:
    if name not in obj.attrs:
        raise FormatError(path, f"{obj.name} lacks the attribute {name!r} of stempy's sparse "
                                f"layout")
    return int(obj.attrs[name])


def load_counted(path: str | os.PathLike[str]) -> CountedData:
    """Read counted electrons from an HDF5 file in stempy's sparse layout (versions 1-3).

    Parameters
    ----------
    path : str or PathLike
        A file written by :func:`save_counted` or by ``stempy.io.save_electron_counts``.

    Returns
    -------
    CountedData

    Raises
    ------
    framescope.errors.FormatError
        The file lacks the layout's datasets or attributes, or they disagree.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        if "electron_events/frames" not in f or "electron_events/scan_positions" not in f:
            raise FormatError(path, "no electron_events/frames and scan_positions: not "
                                    "counted electrons in stempy's sparse layout")
        version = int(f.attrs.get("version", 1))
        dset = f["electron_events/frames"]
        positions_ds = f["electron_events/scan_positions"]
        frame_shape = (_attr(dset, "Nx", path), _attr(dset, "Ny", path))
        scan_shape = (_attr(positions_ds, "Ny", path), _attr(positions_ds, "Nx", path))
        data = dset[()]
        n_pos = scan_shape[0] * scan_shape[1]
        if version >= 3:
            per_position, rest = divmod(len(data), n_pos)
            if rest or not per_position:
                raise FormatError(path, f"{len(data)} frames do not fill the {scan_shape} "
                                        f"scan evenly")
            position = np.arange(len(data)) // per_position
        else:
            position = np.asarray(positions_ds[()], dtype=np.int64)
            if position.shape != (len(data),) or (len(position) and (
                    position.min() < 0 or position.max() >= n_pos)):
                raise FormatError(path, f"scan_positions must give a position in the "
                                        f"{scan_shape} scan for each of the {len(data)} frames")
        centroids = f["electron_events/centroids"][()] if (
            "electron_events/centroids" in f) else None
        meta = f["metadata"].attrs if "metadata" in f else {}
        thresholds = (Thresholds.from_json(meta["framescope_thresholds"])
                      if "framescope_thresholds" in meta else None)
        cal_text = meta.get("calibration")
    lengths = np.fromiter((len(x) for x in data), dtype=np.int64, count=len(data))
    order = np.argsort(position, kind="stable")
    # the events of every position, its frames in file order
    indices = (np.concatenate([np.asarray(data[j]) for j in order]) if len(data)
               else np.empty(0))
    if indices.size and (indices.min() < 0 or indices.max() >= 2**32):
        raise FormatError(path, "event pixel indices outside uint32")
    offsets = np.zeros(n_pos + 1, dtype=np.int64)
    np.cumsum(np.bincount(position, weights=lengths, minlength=n_pos).astype(np.int64),
              out=offsets[1:])
    if centroids is not None and not np.array_equal(order, np.arange(len(order))):
        centroids = None  # written only by save_counted, whose frames are in scan order
    calibration = None
    if cal_text:
        from framescope.calibration import Calibration

        calibration = Calibration.from_json(cal_text)
    try:
        return CountedData(scan_shape=scan_shape, frame_shape=frame_shape, offsets=offsets,
                           indices=indices.astype(np.uint32), centroids=centroids,
                           thresholds=thresholds, calibration=calibration)
    except CountingError as err:
        raise FormatError(path, str(err)) from err
