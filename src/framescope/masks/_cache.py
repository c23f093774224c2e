"""A small thread-safe LRU cache bounded by bytes, for rasterised masks.

The cache is keyed by content hashes (mask key, detector shape), not by object identity: a
dask worker unpickles a fresh :class:`~framescope.masks.MaskStack` for every task, and a
per-instance cache would be empty each time. Values are read-only arrays shared between
callers, so nobody can corrupt another caller's raster.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["RASTERS", "ByteLRU"]


def _nbytes(value: Any) -> int:
    """Memory held by an ndarray or a scipy sparse matrix (anything else counts 0)."""
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    parts = ("data", "indices", "indptr")
    return sum(int(getattr(value, p).nbytes) for p in parts if hasattr(value, p))


class ByteLRU:
    """Least-recently-used mapping that evicts once its values exceed ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """Return the cached value of ``key``, calling ``make()`` on a miss."""
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit[0]
        # build outside the lock: two threads may both build, which is harmless
        value = make()
        size = _nbytes(value)
        if size > self.max_bytes:  # too big to keep; don't flush everything for it
            return value
        with self._lock:
            if key not in self._data:
                self._data[key] = (value, size)
                self._size += size
            while self._size > self.max_bytes:
                _, (_, old) = self._data.popitem(last=False)
                self._size -= old
            return self._data.get(key, (value, size))[0]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._size


# 256 MiB: room for a few hundred 256x256 rasters plus dense stacks of a 512x512 detector
RASTERS = ByteLRU(256 * 2**20)
