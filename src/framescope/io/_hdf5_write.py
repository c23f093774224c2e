"""Write frame stacks as plain HDF5 or as a DECTRIS-style master + data file series.

Used by ``framescope simulate``/``convert``, benchmarks and tests. Frames arrive as an
iterable of ``(k, det_y, det_x)`` blocks and are written as they come, so files far larger
than memory can be produced; block edges need not match chunks, scan rows or data files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from framescope.io._base import row_pieces
from framescope.io._write import check_new

__all__ = ["COMPRESSIONS", "write_dectris", "write_hdf5"]

log = logging.getLogger(__name__)

COMPRESSIONS = (None, "bslz4", "lz4", "gzip")
# aim for chunks of about this size when frames are small (fewer, larger chunks write faster)
CHUNK_TARGET_BYTES = 2**20
MAX_FRAMES_PER_CHUNK = 16
# write cache: holds chunks that straddle block edges until they are complete
WRITE_CACHE_BYTES = 64 * 2**20


def _filter_kwargs(compression: str | None) -> dict[str, Any]:
    if compression is None:
        return {}
    if compression == "bslz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 1}  # level 1: speed over size
    raise ValueError(f"compression must be one of {COMPRESSIONS}, found {compression!r}")


def _frames_per_chunk(frame_shape: tuple[int, int], dtype: np.dtype, limit: int) -> int:
    frame_bytes = frame_shape[0] * frame_shape[1] * dtype.itemsize
    return max(1, min(limit, MAX_FRAMES_PER_CHUNK, CHUNK_TARGET_BYTES // max(frame_bytes, 1)))


def _blocks(
    blocks: Iterable[np.ndarray], n_frames: int, frame_shape: tuple[int, int], dtype: np.dtype
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_frame, block)`` checked for shape and count, as C-contiguous ``dtype``."""
    done = 0
    for block in blocks:
        block = np.asarray(block)
        if block.ndim == 2:
            block = block[None]
        if block.shape[1:] != tuple(frame_shape):
            raise ValueError(
                f"block of shape {block.shape} does not hold frames of shape {frame_shape}"
            )
        if done + len(block) > n_frames:
            raise ValueError(f"blocks hold more than the announced {n_frames} frames")
        if len(block):
            yield done, np.ascontiguousarray(block, dtype=dtype)
        done += len(block)
    if done != n_frames:
        raise ValueError(f"blocks held {done} frames, expected n_frames={n_frames}")


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Write to a temporary name, then rename onto ``path``.

    Readers holding the old file open keep reading it (HDF5 refuses to truncate a file
    this process has open), and an interrupted write leaves no half-written ``path``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _set_attrs(obj: h5py.HLObject, metadata: dict[str, Any] | None) -> None:
    for key, value in (metadata or {}).items():
        obj.attrs[key] = value


def write_hdf5(
    path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: Any,
    scan: tuple[int, int] | None = None,
    dataset: str = "/data/frames",
    compression: str | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Stream frames into one HDF5 dataset, 4D ``(scan_y, scan_x, h, w)`` or 3D.

    Parameters
    ----------
    path : str or path-like
        Output file; overwritten.
    blocks : iterable of numpy.ndarray
        ``(k, h, w)`` blocks in frame order, ``n_frames`` frames in all.
    n_frames : int
        Total number of frames.
    frame_shape : (int, int)
        ``(h, w)`` of one frame.
    dtype : numpy dtype-like
        Stored dtype (may be big-endian, e.g. ``">u2"``).
    scan : (int, int), optional
        Write a 4D dataset of this scan shape (must hold exactly ``n_frames``); else 3D.
    dataset : str
        Dataset path inside the file; parent groups are created.
    compression : {None, "bslz4", "lz4", "gzip"}
        HDF5 filter: bitshuffle+LZ4 and LZ4 through ``hdf5plugin``, or gzip level 1.
    metadata : dict, optional
        Scalar attributes stored on the dataset.
    overwrite : bool
        Replace an existing file (else :class:`FileExistsError`).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = check_new(path, overwrite)
    dtype = np.dtype(dtype)
    h, w = frame_shape
    kwargs = _filter_kwargs(compression)
    if scan is not None:
        ny, nx = scan
        if ny * nx != n_frames:
            raise ValueError(f"scan {ny}x{nx} holds {ny * nx} frames, n_frames is {n_frames}")
        shape: tuple[int, ...] = (ny, nx, h, w)
        chunks: tuple[int, ...] = (1, _frames_per_chunk(frame_shape, dtype, nx), h, w)
    else:
        shape = (n_frames, h, w)
        chunks = (_frames_per_chunk(frame_shape, dtype, max(n_frames, 1)), h, w)
    with (
        _replacing(path) as tmp,
        h5py.File(tmp, "w", rdcc_nbytes=WRITE_CACHE_BYTES, rdcc_nslots=10007) as f,
    ):
        dset = f.create_dataset(dataset, shape=shape, dtype=dtype, chunks=chunks, **kwargs)
        _set_attrs(dset, metadata)
        for first, block in _blocks(blocks, n_frames, frame_shape, dtype):
            stop = first + len(block)
            if scan is None:
                dset.write_direct(block, dest_sel=np.s_[first:stop])
                continue
            for pos, y0, y1, x0, x1 in row_pieces(first, stop, scan[1]):
                n = (y1 - y0) * (x1 - x0)
                piece = block[pos : pos + n].reshape(y1 - y0, x1 - x0, h, w)
                dset.write_direct(piece, dest_sel=np.s_[y0:y1, x0:x1])
    log.info("wrote %d frames to %s:%s", n_frames, path, dataset)
    return path


def _dectris_fields(
    n_frames: int, frame_shape: tuple[int, int], dtype: np.dtype
) -> dict[str, tuple[str, Any, str | None]]:
    """Default master-file entries: name → (group under the detector, value, units)."""
    h, w = frame_shape
    return {
        "description": ("", "Dectris EIGER2 (framescope simulation)", None),
        "detector_number": ("", "E-00-0000", None),
        "beam_center_x": ("", w / 2, "pixel"),
        "beam_center_y": ("", h / 2, "pixel"),
        "count_time": ("", 0.000999, "s"),
        "frame_time": ("", 0.001, "s"),
        "detector_distance": ("", 0.1, "m"),
        "x_pixel_size": ("", 7.5e-05, "m"),
        "y_pixel_size": ("", 7.5e-05, "m"),
        "sensor_thickness": ("", 0.00045, "m"),
        "sensor_material": ("", "Si", None),
        "bit_depth_image": ("", dtype.itemsize * 8, None),
        "nimages": ("detectorSpecific", n_frames, None),
        "ntrigger": ("detectorSpecific", 1, None),
        "trigger_mode": ("detectorSpecific", "ints", None),
        "x_pixels_in_detector": ("detectorSpecific", w, None),
        "y_pixels_in_detector": ("detectorSpecific", h, None),
        "software_version": ("detectorSpecific", "framescope-simulated", None),
    }


def _write_master(
    master: Path, data_files: list[tuple[str, int, int]], fields: dict[str, Any],
    frame_shape: tuple[int, int],
) -> None:
    with _replacing(master) as tmp, h5py.File(tmp, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        for i, (name, _, _) in enumerate(data_files, start=1):
            # relative file name, as the detector writes it: the series stays movable
            data[f"data_{i:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        spec = det.create_group("detectorSpecific")
        spec.attrs["NX_class"] = "NXcollection"
        for name, (group, value, units) in fields.items():
            target = spec if group == "detectorSpecific" else det
            ds = target.create_dataset(name, data=value)
            if units is not None:
                ds.attrs["units"] = units
        # a realistic, non-scalar entry readers must not load as metadata
        spec.create_dataset("pixel_mask", data=np.zeros(frame_shape, np.uint32),
                            compression="gzip", chunks=True)
        beam = inst.create_group("beam")
        beam.attrs["NX_class"] = "NXbeam"
        wl = beam.create_dataset("incident_wavelength", data=0.0251)  # 200 kV electrons
        wl.attrs["units"] = "angstrom"


def write_dectris(
    master_path: str | os.PathLike[str],
    blocks: Iterable[np.ndarray],
    *,
    n_frames: int,
    frame_shape: tuple[int, int],
    dtype: Any,
    frames_per_file: int = 1000,
    compression: str | None = "bslz4",
    metadata: dict[str, Any] | None = None,
    scan: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Stream frames into a DECTRIS-style series: ``<prefix>_master.h5`` + data files.

    Data files ``<prefix>_data_000001.h5``, … hold ``/entry/data/data`` (one frame per
    chunk, as the detector writes them) with ``image_nr_low``/``image_nr_high`` attributes;
    the master links them and carries detector metadata with ``units`` attributes. The
    master is written last, so it only exists for a complete series.

    Parameters
    ----------
    master_path : str or path-like
        Output master file; must end in ``_master.h5``.
    blocks : iterable of numpy.ndarray
        ``(k, h, w)`` blocks in frame order, ``n_frames`` frames in all.
    n_frames, frame_shape, dtype
        Total frames, ``(h, w)`` and stored dtype.
    frames_per_file : int
        Frames per data file (the detector's ``nimages_per_file``).
    compression : {"bslz4", "lz4", "gzip", None}
        HDF5 filter of the frames.
    metadata : dict, optional
        Overrides of the default detector entries (e.g. ``detector_distance``,
        ``beam_center_x``, ``nimages``); other keys are added to the detector group.
    scan : (int, int), optional
        Scan shape, recorded as ``detectorSpecific/framescope_scan_shape`` (DECTRIS files
        have no such field; :class:`~framescope.io._dectris.DectrisReader` honours it).
    overwrite : bool
        Replace an existing master and data files (else :class:`FileExistsError`).

    Returns
    -------
    pathlib.Path
        The master file.
    """
    master = check_new(master_path, overwrite)
    if not master.name.endswith("_master.h5"):
        raise ValueError(f"{master}: a DECTRIS master file name must end in '_master.h5'")
    if frames_per_file < 1:
        raise ValueError(f"frames_per_file must be >= 1, found {frames_per_file}")
    dtype = np.dtype(dtype)
    h, w = frame_shape
    prefix = master.name[: -len("_master.h5")]
    kwargs = _filter_kwargs(compression)
    fields = _dectris_fields(n_frames, frame_shape, dtype)
    if scan is not None:
        if scan[0] * scan[1] != n_frames:
            raise ValueError(f"scan {scan[0]}x{scan[1]} does not hold n_frames={n_frames}")
        fields["framescope_scan_shape"] = ("detectorSpecific", np.array(scan, np.int64), None)
    for key, value in (metadata or {}).items():
        group, _, units = fields.get(key, ("", None, None))
        fields[key] = (group, value, units)

    data_files: list[tuple[str, int, int]] = []  # (name, first frame, count)
    for i, first in enumerate(range(0, n_frames, frames_per_file), start=1):
        name = f"{prefix}_data_{i:06d}.h5"
        check_new(master.parent / name, overwrite)
        data_files.append((name, first, min(frames_per_file, n_frames - first)))
    current: tuple[h5py.File, h5py.Dataset, Path] | None = None  # open file, its dataset, tmp
    index = 0
    try:
        for first, block in _blocks(blocks, n_frames, frame_shape, dtype):
            pos = 0
            while pos < len(block):
                name, file_first, count = data_files[index]
                if current is None:
                    # temporary name, renamed when complete (see _replacing)
                    tmp = master.parent / f".{name}.{os.getpid()}.part"
                    f = h5py.File(tmp, "w")
                    dset = f.create_dataset("/entry/data/data", shape=(count, h, w),
                                            dtype=dtype, chunks=(1, h, w), **kwargs)
                    dset.attrs["image_nr_low"] = np.int32(file_first + 1)
                    dset.attrs["image_nr_high"] = np.int32(file_first + count)
                    current = (f, dset, tmp)
                f, dset, tmp = current
                at = first + pos
                n = min(len(block) - pos, file_first + count - at)
                dset.write_direct(block[pos : pos + n],
                                  dest_sel=np.s_[at - file_first : at - file_first + n])
                pos += n
                if at + n == file_first + count:  # data file complete
                    f.close()
                    os.replace(tmp, master.parent / name)
                    current, index = None, index + 1
    finally:
        if current is not None:
            current[0].close()
            current[2].unlink(missing_ok=True)
    _write_master(master, data_files, fields, frame_shape)
    log.info("wrote %d frames to %s + %d data files", n_frames, master, len(data_files))
    return master
