"""Helpers of the fused numba kernels that need no numba: dtypes, views, mask runs, cores.

The kernels themselves (``apply_masks_runs``, ``sum_frames``, ``com_sums``) are defined in
:mod:`framescope.udf._fused`; UDFs bind them through :class:`LazyKernel`, which imports that
module, and numba with it (~0.15 s), on the first call: ``import framescope`` does not pay
for numba, and a process pays only for the kernels it calls.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FUSED_DTYPES", "LazyKernel", "fused_view", "mask_runs", "share_cores"]


#: frame dtypes the kernels are compiled and tested for
FUSED_DTYPES = frozenset(np.dtype(t) for t in ("uint8", "uint16", "uint32", "float32"))


class LazyKernel:
    """A numba kernel that imports its module, and numba, on its first call.

    UDF modules bind their kernels to these stand-ins, so importing a UDF imports no numba,
    and a process loads (from the cache) only the kernels it calls.
    """

    __slots__ = ("_kernel", "module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        self._kernel: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kernel = self._kernel
        if kernel is None:  # two threads may both import: the import lock makes one wait
            kernel = self._kernel = getattr(importlib.import_module(self.module), self.name)
        return kernel(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<LazyKernel {self.module}.{self.name}>"


def fused_view(data: np.ndarray) -> np.ndarray | None:
    """``data`` as a read-only view the kernels take, or None if they do not apply.

    The kernels take C-contiguous native ``(n, h, w)`` numpy stacks of
    :data:`FUSED_DTYPES`. Always passing read-only views means one compiled (and cached)
    variant per dtype serves memory maps and in-memory tiles alike.
    """
    if (not isinstance(data, np.ndarray) or data.ndim != 3 or data.dtype not in FUSED_DTYPES
            or not data.flags.c_contiguous):
        return None
    view = data.view()
    view.flags.writeable = False
    return view


def share_cores() -> None:
    """Launch kernels from this thread on one core if it runs one task of many in parallel.

    A cluster already runs a task per core (framescope starts one single-threaded worker
    per core), and so does the inline executor's thread pool; each task spawning numba's
    whole pool oversubscribes the cores. Measured on 2 cores, 2 workers: 2 kernel threads
    each ran a ring 2.2x and sum_frame 3.3x slower than 1. Elsewhere (``client="sync"``,
    direct calls) the thread count is left as it is.
    """
    if not threading.current_thread().name.startswith("framescope-inline"):
        # looked up, not imported; another thread may be importing it (partly initialised)
        get_worker = getattr(sys.modules.get("distributed"), "get_worker", None)
        if get_worker is None:
            return
        try:
            get_worker()
        except ValueError:
            return
    import numba  # here: imported by the first task, not by `import framescope`

    if numba.get_num_threads() != 1:
        numba.set_num_threads(1)  # per calling thread: only this task thread's launches


def mask_runs(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of the pixels where any of ``k`` masks is nonzero, and their weights.

    Parameters
    ----------
    dense : ndarray, shape (k, h, w)
        The masks (converted to float32).

    Returns
    -------
    row_index, x0, x1 : ndarray of int64, shape (runs,)
        Run ``r`` is ``frame[row_index[r], x0[r]:x1[r]]``; runs are in row-major order and
        never empty.
    weights : ndarray of float32, shape (pixels, k), Fortran order
        Mask values of the run pixels, run after run. Each mask's column is contiguous:
        :func:`~framescope.udf._fused.apply_masks_runs` takes one long dot product per
        mask with a frame's gathered pixels, 1.7-2.5x faster (k = 2..8) than the
        pixel-major loop over ``k`` that C order would suit.

    Examples
    --------
    >>> m = np.zeros((1, 3, 4), np.float32)
    >>> m[0, 1, 1:3] = 1
    >>> [a.tolist() for a in mask_runs(m)]
    [[1], [1], [3], [[1.0], [1.0]]]
    """
    dense = np.asarray(dense, dtype=np.float32)
    if dense.ndim != 3:
        raise ValueError(f"mask_runs: expected a (k, h, w) stack, found shape {dense.shape}")
    used = np.any(dense != 0, axis=0)
    padded = np.zeros((used.shape[0], used.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = used
    step = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    rows, x0 = np.nonzero(step == 1)
    x1 = np.nonzero(step == -1)[1]  # row-major order pairs each end with its start
    # boolean indexing walks pixels row-major: exactly the run order
    weights = np.asfortranarray(dense[:, used].T)
    return rows.astype(np.int64), x0.astype(np.int64), x1.astype(np.int64), weights

