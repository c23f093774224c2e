"""Record analysed live frames (and series headers) to HDF5, and read recordings back.

Layout (one group per series, frames at their frame number)::

    /                       attrs: framescope_recording = 1, protocol
    /series_<id>/frames     (n_frames, det_y, det_x), chunked per frame
    /series_<id>/received   (n_frames,) bool: which frames were recorded
    /series_<id>            attrs: series, scan_shape, scan_order, header (JSON),
                            status (JSON, when the series ended)

Frames that were dropped or never arrived stay ``received = False`` and are not replayed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - recordings of compressed frames need its filters to read
import numpy as np

from framescope.live._messages import SeriesStart
from framescope.live._scan import Series

__all__ = ["Recorder", "read_recording"]

log = logging.getLogger(__name__)


def _runs(indices: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first frame, stop, rows of the batch) for runs of consecutive frame numbers."""
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    cuts = np.flatnonzero(np.diff(ordered) != 1) + 1
    for rows in np.split(order, cuts):
        yield int(indices[rows[0]]), int(indices[rows[-1]]) + 1, rows


class Recorder:
    """Writes each series' frames into an HDF5 file while a live run analyses them.

    Parameters
    ----------
    path : str or PathLike
        New HDF5 file (an existing one is refused).
    protocol : str
        Recorded in the attrs (informative: replays may use any protocol).
    compression : {None, "bslz4", "lz4"}
        HDF5 filter for the frames (via hdf5plugin); default none, the fastest to write.
    """

    def __init__(self, path: str | os.PathLike[str], *, protocol: str = "",
                 compression: str | None = None) -> None:
        self.path = os.fspath(path)
        if os.path.exists(self.path):
            raise FileExistsError(f"{self.path}: recording exists; choose a new file name")
        self._filters: dict[str, Any] = {}
        if compression is not None:
            import hdf5plugin

            self._filters = dict(hdf5plugin.Bitshuffle(cname="lz4") if compression == "bslz4"
                                 else hdf5plugin.LZ4())
        self._file = h5py.File(self.path, "w")
        self._file.attrs["framescope_recording"] = 1
        self._file.attrs["protocol"] = protocol
        self._groups: dict[int, h5py.Group] = {}
        self._lock = threading.Lock()

    def begin(self, series: Series) -> None:
        """Create the series' group (a repeated series id gets a suffix)."""
        meta = series.meta
        name = f"series_{series.series}"
        k = 1
        with self._lock:
            while name in self._file:
                k += 1
                name = f"series_{series.series}_{k}"
            g = self._file.create_group(name)
            g.create_dataset("frames", (series.n_frames, *meta.frame_shape), meta.dtype,
                             chunks=(1, *meta.frame_shape), **self._filters)
            g.create_dataset("received", (series.n_frames,), bool)
            g.attrs.update({"series": series.series, "scan_shape": list(meta.scan_shape),
                            "scan_order": series.order, "header": json.dumps(series.header)})
            self._groups[series.series] = g

    def write(self, series: int, indices: np.ndarray, frames: np.ndarray) -> None:
        """Store frames at their frame numbers."""
        with self._lock:
            g = self._groups.get(series)
            if g is None:
                return
            received = g["received"]
            for first, stop, rows in _runs(np.asarray(indices)):
                block = frames[rows[0]:rows[-1] + 1] if np.all(np.diff(rows) == 1) \
                    else frames[rows]
                g["frames"][first:stop] = block
                received[first:stop] = True

    def end(self, series: int, status: dict[str, Any]) -> None:
        """Store the final status of a series and flush."""
        with self._lock:
            g = self._groups.get(series)
            if g is not None:
                g.attrs["status"] = json.dumps(status, default=str)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file.id.valid:
                self._file.close()


def read_recording(path: str | os.PathLike[str], series: int | None = None,
                   ) -> Iterator[tuple[SeriesStart, Iterator[tuple[int, np.ndarray]]]]:
    """Yield ``(header, frames)`` per recorded series; ``frames`` yields (number, frame).

    Parameters
    ----------
    path : str or PathLike
        A file written by :class:`Recorder`.
    series : int, optional
        Only this series id.

    Raises
    ------
    framescope.errors.FormatError
        The file is not a framescope recording.
    """
    from framescope.errors import FormatError

    with h5py.File(path, "r") as f:
        if f.attrs.get("framescope_recording") != 1:
            raise FormatError(path, "not a framescope live recording (attribute "
                              "framescope_recording missing)")
        heads = []
        for name in sorted(f, key=lambda n: (int(f[n].attrs["series"]), n)):
            g = f[name]
            sid = int(g.attrs["series"])
            if series is not None and sid != series:
                continue
            frames = g["frames"]
            heads.append((name, SeriesStart(
                sid, tuple(frames.shape[1:]), frames.dtype, len(frames),
                tuple(int(v) for v in g.attrs["scan_shape"]), str(g.attrs["scan_order"]),
                json.loads(g.attrs["header"]))))
    for name, start in heads:
        yield start, _frames(path, name)


def _frames(path: str | os.PathLike[str], name: str, block: int = 256,
            ) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, frame) of the recorded frames of group ``name``, in order."""
    with h5py.File(path, "r") as f:
        frames, received = f[name]["frames"], f[name]["received"][()]
        for first in range(0, len(frames), block):
            got = received[first : first + block]
            if not got.any():
                continue
            data = frames[first : first + len(got)]
            for k in np.flatnonzero(got):
                yield first + int(k), data[k]
