"""HDF5 files holding a 3D frame stack or a 4D ``(scan_y, scan_x, det_y, det_x)`` dataset.

Opening reads only the object headers (dataset shapes, dtypes, filters, attributes). Frames
are read with ``read_direct`` straight into the caller's buffer; HDF5 converts big-endian
data to the native byte order on the way.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from framescope.errors import CompressionPluginError, DatasetNotFoundError
from framescope.io._base import FrameReader, jsonable, row_pieces
from framescope.io._nexus import hdf5_fields

if TYPE_CHECKING:
    import h5py

__all__ = ["Hdf5Reader", "check_filters", "open_h5"]

log = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# raw chunk cache per open dataset: room for a few compressed multi-frame chunks, so tiles
# that cut a chunk do not decompress it again and again (HDF5's default is 1 MiB)
CHUNK_CACHE_BYTES = 32 * 2**20
CHUNK_CACHE_SLOTS = 10007  # prime, as HDF5 recommends

# names for filter ids HDF5 reports without a name (unavailable plugins have none)
FILTER_NAMES = {
    1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
    32000: "lzf", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32013: "zfp",
    32015: "zstd", 32017: "sz", 32018: "fcidecomp", 32023: "bzip2", 32026: "blosc2",
    32028: "sz3",
}
BITSHUFFLE_CODECS = {2: "lz4", 3: "zstd"}

# guards lazy opening of per-process handles when several threads read at once
_OPEN_LOCK = threading.Lock()


def h5py_with_plugins() -> Any:
    """The h5py module, with hdf5plugin's filters registered, imported on first use."""
    # not at module level: the registry imports every reader to ask guess_can_open, and
    # h5py + hdf5plugin would add ~60 ms to every framescope.open, of any format
    import h5py
    import hdf5plugin  # noqa: F401 - registers bitshuffle/LZ4/Zstd/Blosc filters with HDF5

    return h5py


def open_h5(path: str) -> h5py.File:
    """Open ``path`` read-only with a chunk cache sized for frame tiles."""
    return h5py_with_plugins().File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES,
                                    rdcc_nslots=CHUNK_CACHE_SLOTS)


def filter_names(dset: h5py.Dataset) -> list[str]:
    """Names of the filters in ``dset``'s pipeline, in order."""
    dcpl = dset.id.get_create_plist()
    return [_filter_label(*dcpl.get_filter(i)) for i in range(dcpl.get_nfilters())]


def _filter_label(fid: int, flags: int, opts: Any, name: bytes) -> str:
    if fid == 32008 and len(opts) > 4 and opts[4] in BITSHUFFLE_CODECS:
        return "bitshuffle+" + BITSHUFFLE_CODECS[opts[4]]  # cd_values[4]: inner codec
    if fid in FILTER_NAMES:
        return FILTER_NAMES[fid]
    text = name.decode(errors="replace").split(";")[0].strip()
    return text or f"filter {fid}"


def _chunks_filtered(dset: h5py.Dataset, index: int) -> bool:
    """Whether the stored chunks went through pipeline filter ``index``.

    An optional filter that was unavailable when writing is skipped and recorded in each
    chunk's filter mask; such chunks read fine without the plugin. The first stored chunk
    stands for all of them (one index lookup, not a scan).
    """
    try:
        if dset.id.get_storage_size() == 0:
            return False  # nothing written: reads give the fill value
        info = dset.id.get_chunk_info_by_coord((0,) * dset.ndim)
        if info.byte_offset is None:
            info = dset.id.get_chunk_info(0)
        return not info.filter_mask & (1 << index)
    except Exception:  # old HDF5 without chunk queries: assume the worst
        log.debug("cannot query chunk filter mask of %s", dset.name, exc_info=True)
        return True


def check_filters(path: str, dset: h5py.Dataset) -> list[str]:
    """Raise :class:`CompressionPluginError` when ``dset`` needs an unavailable filter.

    Returns the filter names (for metadata).
    """
    h5py = h5py_with_plugins()
    dcpl = dset.id.get_create_plist()
    names = []
    for i in range(dcpl.get_nfilters()):
        fid, flags, opts, raw_name = dcpl.get_filter(i)
        label = _filter_label(fid, flags, opts, raw_name)
        names.append(label)
        if h5py.h5z.filter_avail(fid):
            continue
        if flags & h5py.h5z.FLAG_OPTIONAL and not _chunks_filtered(dset, i):
            log.debug("%s: %s: optional filter %d skipped on write", path, dset.name, fid)
            continue
        raise CompressionPluginError(
            path,
            f"dataset {dset.name} is compressed with HDF5 filter {fid} ({label}), which is "
            "not available in this Python environment; `pip install hdf5plugin` (registers "
            "bitshuffle, LZ4, Zstd, Blosc, …) or point HDF5_PLUGIN_PATH at the filter plugin",
        )
    return names


def _is_frames(dset: h5py.Dataset) -> bool:
    return dset.ndim in (3, 4) and dset.dtype.kind in "uif" and dset.size > 0


def _describe(found: list[tuple[str, tuple[int, ...], str]]) -> str:
    if not found:
        return "no datasets at all"
    shown = ", ".join(f"{name} {shape} {dtype}" for name, shape, dtype in found[:20])
    more = f" and {len(found) - 20} more" if len(found) > 20 else ""
    return f"found {shown}{more}"


class Hdf5Reader(FrameReader):
    """Frames from a 3D ``(frames, det_y, det_x)`` or 4D dataset in an HDF5 file.

    Parameters
    ----------
    path : str
        The HDF5 file; opened read-only.
    dataset : str, optional
        Path of the dataset inside the file. Default: the 4D dataset, else the 3D one, with
        the most elements (searching the whole file, following soft but not external links).

    Notes
    -----
    Calibration (``calibration_fields``) comes from the dataset's NXentry (NXdetector
    distance, pixel size and beam centre; NXbeam incident energy or wavelength), its NXdata
    axes (scan axes in a length unit, detector axes in an angle unit) and framescope's
    ``calibration`` attribute (JSON) on the dataset or a group above it; see
    docs/formats.md.

    Raises
    ------
    DatasetNotFoundError
        ``dataset`` is missing or unsuitable, or no 3D/4D numeric dataset exists.
    CompressionPluginError
        The dataset needs an HDF5 filter plugin that is not available.
    """

    format: ClassVar[str] = "hdf5"
    suffixes: ClassVar[tuple[str, ...]] = (".h5", ".hdf5", ".hdf", ".nxs", ".emd", ".hspy")
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_h5",)
    _h5: tuple[h5py.File, h5py.Dataset] | None = None

    def __init__(self, path: str, *, dataset: str | None = None) -> None:
        self.path = os.fspath(path)
        with open_h5(self.path) as f:
            dset = self._pick(f, dataset)
            # the caller's path, not dset.name: that names the target of an external link
            self.dataset = "/" + dataset.lstrip("/") if dataset else dset.name
            shape = tuple(int(n) for n in dset.shape)
            self.frame_shape = (shape[-2], shape[-1])
            if dset.ndim == 4:
                self.scan_shape = (shape[0], shape[1])
                self.n_frames = shape[0] * shape[1]
            else:
                self.n_frames = shape[0]
            self.dtype = dset.dtype.newbyteorder("=")
            filters = check_filters(self.path, dset)
            self.metadata = self._metadata(dset, filters)
            self.calibration_fields = hdf5_fields(f, dset, self.path)

    @classmethod
    def guess_can_open(cls, path: str | os.PathLike[str]) -> bool:
        """A known suffix, or the HDF5 signature at the start of the file."""
        if super().guess_can_open(path):
            return True
        try:
            with open(path, "rb") as fh:
                return fh.read(8) == HDF5_SIGNATURE
        except OSError:
            return False

    def _pick(self, f: h5py.File, dataset: str | None) -> h5py.Dataset:
        h5py = h5py_with_plugins()
        found: list[tuple[str, tuple[int, ...], str]] = []
        candidates: list[h5py.Dataset] = []

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                found.append(("/" + name, obj.shape, str(obj.dtype)))
                if _is_frames(obj):
                    candidates.append(obj)

        if dataset is not None:
            obj = f.get(dataset)
            if isinstance(obj, h5py.Dataset) and _is_frames(obj):
                return obj
        # visits every object once by its hard-link name; soft-link targets are objects of
        # this file and so are seen too, external links are not followed
        f.visititems(visit)
        if dataset is not None:
            why = "is missing" if obj is None else (
                f"has shape {obj.shape} {obj.dtype}, expected a non-empty 3D or 4D numeric "
                "dataset" if isinstance(obj, h5py.Dataset) else "is a group, not a dataset"
            )
            usable = ", ".join(d.name for d in candidates) or "none"
            raise DatasetNotFoundError(
                self.path, f"dataset {dataset!r} {why}; usable datasets: {usable}"
            )
        if not candidates:
            raise DatasetNotFoundError(
                self.path,
                "no 3D (frames, det_y, det_x) or 4D (scan_y, scan_x, det_y, det_x) numeric "
                f"dataset; {_describe(found)}",
            )
        best = max(candidates, key=lambda d: (d.ndim == 4, d.size))
        if len(candidates) > 1:
            log.info("%s: using dataset %s of %s", self.path, best.name,
                     [d.name for d in candidates])
        return best

    def _metadata(self, dset: h5py.Dataset, filters: list[str]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for key in dset.attrs:
            try:
                attrs[key] = dset.attrs[key]
            except Exception:  # exotic attribute types h5py cannot read
                log.debug("%s: skipping attribute %s", self.path, key, exc_info=True)
        meta = jsonable(attrs)
        meta.update(
            dataset=dset.name,
            compression=dset.compression or (filters[0] if filters else "none"),
            filters=filters,
            chunks=list(dset.chunks) if dset.chunks else [],
        )
        return meta

    def _dataset(self) -> h5py.Dataset:
        handle = self._h5
        if handle is None:
            with _OPEN_LOCK:
                handle = self._h5
                if handle is None:
                    f = open_h5(self.path)
                    handle = self._h5 = (f, f[self.dataset])
        return handle[1]

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        dset = self._dataset()
        if self.scan_shape is None:
            dset.read_direct(out, np.s_[start:stop])
            return
        nx = self.scan_shape[1]
        h, w = self.frame_shape
        for pos, y0, y1, x0, x1 in row_pieces(start, stop, nx):
            n = (y1 - y0) * (x1 - x0)
            # a view shaped like the hyperslab: contiguous, so HDF5 fills it in place
            dest = out[pos : pos + n].reshape(y1 - y0, x1 - x0, h, w)
            dset.read_direct(dest, np.s_[y0:y1, x0:x1])

    def close(self) -> None:
        """Close this process's file handle (reopened on the next read)."""
        handle, self._h5 = self._h5, None
        if handle is not None:
            handle[0].close()

    def token(self) -> tuple[Any, ...]:
        """The base token plus the dataset path."""
        return (*super().token(), self.dataset)
