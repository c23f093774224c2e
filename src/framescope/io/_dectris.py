"""DECTRIS EIGER/ARINA/… HDF5 series: a ``*_master.h5`` linking ``*_data_NNNNNN.h5`` files.

The master holds the detector metadata under ``/entry/instrument/detector`` and, under
``/entry/data``, external links ``data_000001``, ``data_000002``, … each naming a data file
and its 3D frame stack ``/entry/data/data`` (usually bitshuffle+LZ4 filtered). The links are
resolved here relative to the master's directory rather than through HDF5's external-link
search path, so a moved series still opens and a missing file gets a clear error.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from framescope.errors import FormatError
from framescope.io._base import FrameReader, jsonable
from framescope.io._hdf5 import check_filters, h5py_with_plugins, open_h5
from framescope.io._nexus import beam_fields, detector_fields, scalar

if TYPE_CHECKING:
    import h5py

__all__ = ["DataFileMissingError", "DectrisReader"]

log = logging.getLogger(__name__)

DATA_GROUP = "/entry/data"
DETECTOR_GROUP = "/entry/instrument/detector"
# further groups with scalar metadata worth carrying (prefix-free; detector keys win)
META_GROUPS = (DETECTOR_GROUP, DETECTOR_GROUP + "/detectorSpecific", "/entry/instrument/beam")
_LINK_NAME = re.compile(r"data_\d+$")
_OPEN_LOCK = threading.Lock()


class DataFileMissingError(FormatError, FileNotFoundError):
    """A data file linked from a DECTRIS master file does not exist."""

    def __init__(self, master: str, missing: str, link: str) -> None:
        super().__init__(
            master,
            f"link {DATA_GROUP}/{link} points to data file {missing}, which does not exist; "
            "copy the whole series (master and all *_data_*.h5 files) into one directory",
        )
        self.filename = missing

    def __str__(self) -> str:  # OSError would format errno/filename instead
        return str(self.args[0])


def _scalar(dset: h5py.Dataset) -> Any:
    """The value of a small dataset, or None for arrays (masks, flatfields are not read)."""
    if dset.size > 64 or dset.dtype.kind not in "uifbSOU":
        return None
    try:
        value = dset[()]
    except Exception:  # unreadable type or missing filter on a metadata array
        log.debug("skipping %s", dset.name, exc_info=True)
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    return value


def _read_metadata(master: h5py.File) -> dict[str, Any]:
    h5py = h5py_with_plugins()
    meta: dict[str, Any] = {}
    for group_name in META_GROUPS:
        group = master.get(group_name)
        if not isinstance(group, h5py.Group):
            continue
        for key, obj in group.items():  # only hard/soft links resolve; externals are data
            if not isinstance(obj, h5py.Dataset) or key in meta:
                continue
            value = _scalar(obj)
            if value is None:
                continue
            meta[key] = value
            units = obj.attrs.get("units")
            if units is not None:
                meta[f"{key}_units"] = units
    return jsonable(meta)


def _calibration(master: h5py.File, path: str) -> dict[str, tuple[Any, str]]:
    """Detector geometry and beam energy of a master file (see docs/formats.md).

    The beam: ``/entry/instrument/beam/incident_energy`` and/or ``incident_wavelength``
    (else ``detectorSpecific/photon_energy``, ``monochromator/wavelength``). DECTRIS writes
    these fields whatever the radiation; an EIGER at a synchrotron gives the photons' (1 Å
    at 12.4 keV), an electron detector the electrons' (0.0251 Å at 200 kV).
    :func:`~framescope.calibration.beam_energy` tells which: both values together decide,
    else a wavelength longer than 0.1 Å is X-ray; so an X-ray file never gets an electron
    energy.
    """
    label = os.path.basename(path)
    det = master.get(DETECTOR_GROUP)
    beam = master.get("/entry/instrument/beam")
    energy = scalar(beam, "incident_energy") or scalar(det, "detectorSpecific/photon_energy")
    wavelength = (scalar(beam, "incident_wavelength")
                  or scalar(master.get("/entry/instrument/monochromator"), "wavelength"))
    return {**detector_fields(det, label), **beam_fields(energy, wavelength, label)}


class DectrisReader(FrameReader):
    """Frames of a DECTRIS HDF5 series, opened through its ``*_master.h5`` file.

    Parameters
    ----------
    path : str
        The master file; it and every data file are opened read-only.

    Raises
    ------
    DataFileMissingError
        A linked data file does not exist (names the master and the missing file).
    FormatError
        The master has no ``/entry/data/data_NNNNNN`` entries, or the data files disagree
        in frame shape or dtype.
    CompressionPluginError
        The frames need an HDF5 filter plugin that is not available.
    """

    format: ClassVar[str] = "dectris"
    suffixes: ClassVar[tuple[str, ...]] = ()
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_handles",)
    _handles: dict[int, tuple[h5py.File, h5py.Dataset]] | None = None

    def __init__(self, path: str) -> None:
        h5py = h5py_with_plugins()
        self.path = os.fspath(path)
        base = os.path.dirname(os.path.abspath(self.path))
        #: (data file, dataset path inside it) per link, in frame order
        self.files: list[tuple[str, str]] = []
        counts: list[int] = []
        compression: list[str] = []
        with open_h5(self.path) as master:
            group = master.get(DATA_GROUP)
            names = sorted(n for n in group if _LINK_NAME.match(n)) if group else []
            if not names:
                raise FormatError(
                    self.path, f"no {DATA_GROUP}/data_NNNNNN entries; not a DECTRIS master file"
                )
            for name in names:
                target = self._target(master, group, name, base)
                with open_h5(target[0]) as f:
                    dset = f.get(target[1])
                    if not isinstance(dset, h5py.Dataset) or dset.ndim != 3:
                        raise FormatError(
                            target[0], f"expected a 3D frame stack at {target[1]} (linked from "
                            f"{self.path}), found {dset!r}",
                        )
                    self._check_consistent(target[0], dset, first=not self.files)
                    compression = check_filters(target[0], dset)
                self.files.append(target)
                counts.append(int(dset.shape[0]))
            self.metadata = _read_metadata(master)
            self.calibration_fields = _calibration(master, self.path)
        self.offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self.n_frames = int(self.offsets[-1])
        self.metadata.update(
            compression=compression[0] if compression else "none",
            filters=compression,
            n_data_files=len(self.files),
        )
        self._check_nimages()
        scan = self.metadata.get("framescope_scan_shape")  # written by write_dectris(scan=)
        if isinstance(scan, list) and len(scan) == 2 and scan[0] * scan[1] == self.n_frames:
            self.scan_shape = (int(scan[0]), int(scan[1]))

    @classmethod
    def guess_can_open(cls, path: str | os.PathLike[str]) -> bool:
        """Names ending in ``_master.h5`` or ``_master.hdf5``."""
        return os.fspath(path).lower().endswith(("_master.h5", "_master.hdf5"))

    def _target(self, master: h5py.File, group: h5py.Group, name: str, base: str
                ) -> tuple[str, str]:
        h5py = h5py_with_plugins()
        link = group.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            filename = link.filename
            if not os.path.isabs(filename):
                filename = os.path.join(base, filename)
            if not os.path.isfile(filename):
                raise DataFileMissingError(self.path, filename, name)
            return filename, link.path
        # frames stored in the master itself (hard or soft link)
        obj = group.get(name)
        if not isinstance(obj, h5py.Dataset):
            raise FormatError(self.path, f"{DATA_GROUP}/{name} is neither a link nor a dataset")
        return self.path, obj.name

    def _check_consistent(self, path: str, dset: h5py.Dataset, *, first: bool) -> None:
        frame_shape = (int(dset.shape[1]), int(dset.shape[2]))
        dtype = dset.dtype.newbyteorder("=")
        if first:
            self.frame_shape, self.dtype = frame_shape, dtype
        elif (frame_shape, dtype) != (self.frame_shape, self.dtype):
            raise FormatError(
                path, f"frames are {frame_shape} {dtype}, but the first data file of "
                f"{self.path} has {self.frame_shape} {self.dtype}",
            )

    def _check_nimages(self) -> None:
        nimages = self.metadata.get("nimages")
        ntrigger = self.metadata.get("ntrigger", 1)
        if not isinstance(nimages, int) or not isinstance(ntrigger, int):
            return
        # internal/external enable modes take one frame per trigger
        mode = str(self.metadata.get("trigger_mode", "")).lower()
        expected = ntrigger if mode in ("inte", "exte") else nimages * ntrigger
        if expected != self.n_frames:
            log.warning(
                "%s: the master announces %d frames (nimages %d x ntrigger %d) but the data "
                "files hold %d; the series may be incomplete",
                self.path, expected, nimages, ntrigger, self.n_frames,
            )

    def _dataset(self, i: int) -> h5py.Dataset:
        handles = self._handles
        if handles is None or i not in handles:
            with _OPEN_LOCK:
                if self._handles is None:
                    self._handles = {}
                handles = self._handles
                if i not in handles:
                    f = open_h5(self.files[i][0])
                    handles[i] = (f, f[self.files[i][1]])
        return handles[i][1]

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pos = 0
        for i in range(first, len(self.files)):
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            a, b = max(start, lo), min(stop, hi)
            if a >= b:
                if lo >= stop:
                    break
                continue  # empty data file
            self._dataset(i).read_direct(out[pos : pos + b - a], np.s_[a - lo : b - lo])
            pos += b - a

    def detector_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The master's ``pixel_mask`` and ``flatfield`` (read now, not kept) and the flags
        saying whether the detector applied them."""
        arrays: dict[str, np.ndarray] = {}
        with open_h5(self.path) as master:
            spec = master.get(DETECTOR_GROUP + "/detectorSpecific")
            for name in ("pixel_mask", "flatfield"):
                dset = None if spec is None else spec.get(name)
                if dset is not None and getattr(dset, "ndim", 0) == 2:
                    arrays[name] = dset[()]
        flags = {k: self.metadata.get(k) for k in ("flatfield_correction_applied",
                                                   "pixel_mask_applied")}
        return arrays, flags

    def close(self) -> None:
        """Close this process's data file handles (reopened on the next read)."""
        handles, self._handles = self._handles, None
        for f, _ in (handles or {}).values():
            f.close()

    def token(self) -> tuple[Any, ...]:
        """The base token of the master plus size and mtime of every data file."""
        parts = []
        for filename, dataset in self.files:
            st = os.stat(filename)
            parts.append((os.path.abspath(filename), dataset, st.st_size, st.st_mtime_ns))
        return (*super().token(), tuple(parts))
