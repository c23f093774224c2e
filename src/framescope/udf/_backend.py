"""Array backends: numpy on the CPU, cupy on an NVIDIA GPU.

The engine moves each tile to the backend before :meth:`UDF.process_tile` and the task's
buffers back to host numpy before they leave the task, so merging and publishing never see
device arrays. UDFs written with :func:`xp` of their inputs (``xp.matmul``, ``xp.sum``)
run unchanged on both.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Literal

import numpy as np

__all__ = [
    "BACKENDS",
    "array_module",
    "cupy_available",
    "resolve_backend",
    "to_device",
    "to_host",
    "xp",
]

BACKENDS = ("numpy", "cupy")
Backend = Literal["numpy", "cupy"]


def _is_cupy(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


@functools.cache
def cupy_available() -> bool:
    """Whether cupy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA errors without a driver/device
        return False


def xp(a: Any) -> types.ModuleType:
    """The array module of ``a``: ``cupy`` for device arrays, else ``numpy``."""
    if _is_cupy(a):
        import cupy

        return cupy
    return np


def array_module(backend: str) -> types.ModuleType:
    """The array module of ``backend``."""
    if backend == "cupy":
        import cupy

        return cupy
    return np


def resolve_backend(backend: str | None, data: Any = None) -> Backend:
    """``backend=`` of :func:`framescope.run`: None picks cupy when ``data`` (a dask array
    or its meta) already holds cupy blocks, else numpy; "cupy" needs a usable GPU."""
    if backend is None:
        meta = getattr(data, "_meta", data)
        return "cupy" if _is_cupy(meta) else "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, found {backend!r}")
    if backend == "cupy" and not cupy_available():
        raise RuntimeError("backend='cupy': cupy is not installed or sees no CUDA device "
                           "(pip install 'framescope[gpu]' on a machine with an NVIDIA GPU)")
    return backend  # type: ignore[return-value]


def to_device(a: Any, backend: Backend) -> Any:
    """``a`` on ``backend`` (no copy when it is already there)."""
    if backend == "cupy":
        import cupy

        return cupy.asarray(a)
    return a


def to_host(a: Any) -> np.ndarray:
    """``a`` as a host numpy array (no copy for numpy input)."""
    return a.get() if _is_cupy(a) else a
