"""Zarr arrays (v2 or v3 stores), opened read-only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from framescope.errors import DatasetNotFoundError, FormatError
from framescope.io._base import FrameReader, jsonable, row_pieces

__all__ = ["ZarrReader"]

_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def _zarr() -> Any:
    """The zarr module, imported on first use."""
    # not at module level: the registry imports every reader to ask guess_can_open, and
    # zarr would add ~0.25 s to every framescope.open, of any format
    import zarr

    return zarr


def _candidates(group: Any, prefix: str = "") -> list[tuple[str, tuple[int, ...], str]]:
    zarr = _zarr()
    found = []
    for name, item in group.members():
        path = f"{prefix}/{name}"
        if isinstance(item, zarr.Array):
            found.append((path, tuple(item.shape), str(item.dtype)))
        else:
            found.extend(_candidates(item, path))
    return found


class ZarrReader(FrameReader):
    """A 3D frame stack or 4D scan array in a Zarr store (a directory).

    Parameters
    ----------
    path : str
        The store (directory); a group or an array.
    dataset : str, optional
        Array path inside a group; default: the largest 4D array, else the largest 3D one.
    """

    format = "zarr"
    suffixes = (".zarr",)
    _handle_attrs: ClassVar[tuple[str, ...]] = ("_arr",)

    @classmethod
    def guess_can_open(cls, path: str | os.PathLike[str]) -> bool:
        p = Path(path)
        return p.suffix.lower() in cls.suffixes or (
            p.is_dir() and any((p / m).exists() for m in _MARKERS)
        )

    def __init__(self, path: str, *, dataset: str | None = None) -> None:
        self.path = path
        zarr = _zarr()
        try:
            node = zarr.open(path, mode="r")
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise FormatError(path, f"not a readable Zarr store: {e}") from None
        if isinstance(node, zarr.Array):
            arr, self.dataset = node, ""
        else:
            arr, self.dataset = self._pick(node, dataset)
        if arr.ndim not in (3, 4) or np.dtype(arr.dtype).kind not in "uif":
            raise DatasetNotFoundError(
                path, f"array {self.dataset or '/'} has shape {arr.shape} dtype {arr.dtype}; "
                "expected a 3D or 4D integer/float array",
            )
        self._shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype).newbyteorder("=")
        self.frame_shape = (self._shape[-2], self._shape[-1])
        self.n_frames = int(np.prod(self._shape[:-2]))
        self.scan_shape = (self._shape[0], self._shape[1]) if arr.ndim == 4 else None
        self.metadata = {
            "dataset": self.dataset or "/",
            "zarr_chunks": list(arr.chunks),
            **jsonable(dict(arr.attrs)),
        }

    def _pick(self, group: Any, dataset: str | None) -> tuple[Any, str]:
        found = _candidates(group)
        listing = ", ".join(f"{p} {s} {d}" for p, s, d in found) or "nothing"
        if dataset is not None:
            key = dataset.strip("/")
            try:
                arr = group[key]
            except KeyError:
                raise DatasetNotFoundError(
                    self.path, f"no array {dataset!r}; found: {listing}") from None
            return arr, "/" + key
        usable = [f for f in found if len(f[1]) in (3, 4) and np.dtype(f[2]).kind in "uif"]
        if not usable:
            raise DatasetNotFoundError(
                self.path, f"no 3D/4D numeric array (frame stack) in the store; found: {listing}")
        best = max(usable, key=lambda f: (len(f[1]), int(np.prod(f[1]))))
        return group[best[0].strip("/")], best[0]

    def _array(self) -> Any:
        arr = self.__dict__.get("_arr")
        if arr is None:
            node = _zarr().open(self.path, mode="r")
            arr = node if not self.dataset else node[self.dataset.strip("/")]
            self._arr = arr
        return arr

    def token(self) -> tuple[Any, ...]:
        st = os.stat(self.path)
        return (*super().token(), self.dataset, st.st_mtime_ns)

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        arr = self._array()
        if len(self._shape) == 3:
            out[...] = arr[start:stop]
            return
        for at, y0, y1, x0, x1 in row_pieces(start, stop, self._shape[1]):
            n = (y1 - y0) * (x1 - x0)
            out[at : at + n] = arr[y0:y1, x0:x1].reshape(n, *self.frame_shape)
