"""Results cached by (data, analysis, ROI) key: a new mask on unchanged data costs only itself."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from typing import Any

import numpy as np
import xarray as xr

from framescope.corrections import ENCODING_KEY

__all__ = ["ResultCache", "data_key", "roi_key"]


def data_key(arr: xr.DataArray) -> str:
    """Identity of the frames: the dask graph name, which framescope derives from the file's
    path, size, mtime and opening options (and which ``persist`` keeps)."""
    if arr.chunks is None and not getattr(arr, "_in_memory", True):
        # lazily indexed (xr.open_dataset without chunks): hashing would load it all
        return "lazy-" + uuid.uuid4().hex
    name = getattr(arr.data, "name", None)
    if name is None:  # numpy-backed: hash the bytes once
        name = "np-" + hashlib.blake2b(np.ascontiguousarray(arr.data).data,
                                       digest_size=16).hexdigest()
    corrections = arr.encoding.get(ENCODING_KEY)
    # corrected frames are other frames: their results must not meet the raw ones'
    return str(name) if corrections is None else f"{name}+corrections-{corrections.key}"


def roi_key(roi: Any) -> str:
    if roi is None:
        return "all"
    mask = np.ascontiguousarray(np.asarray(roi, dtype=bool))
    return hashlib.blake2b(mask.data, digest_size=16).hexdigest() + str(mask.shape)


class ResultCache:
    """A byte-bounded LRU of numpy results; thread-safe."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, ...], value: np.ndarray) -> None:
        value = np.array(value, copy=True)
        value.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


#: the process-wide cache used by ``arr.fs`` methods
results = ResultCache()
