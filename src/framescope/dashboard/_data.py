"""Data-side helpers of the dashboard."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import xarray as xr

__all__ = ["current_client", "in_memory"]


@contextmanager
def current_client(client: Any) -> Iterator[None]:
    """Make ``client`` distributed's current client in this thread.

    The engine's ``as_completed`` looks up the *default* client, which a client the user
    passed need not be. ``Client.as_current()`` would do, but it also sets dask's global
    ``scheduler`` config, and job threads entering and leaving it concurrently leave that
    set with no client behind it; the context variable alone is per thread.
    """
    try:
        from distributed.client import _current_client
    except ImportError:  # another distributed: fall back to the public, racier API
        with client.as_current():
            yield
        return
    token = _current_client.set(client)
    try:
        yield
    finally:
        _current_client.reset(token)


def in_memory(arr: xr.DataArray) -> xr.DataArray:
    """``arr``, made to use the frames it holds in memory when it was persisted.

    ``arr.fs.persist`` keeps the ``framescope_source`` encoding, so the engine would read
    the frames from their source again (for synthetic data: simulate them again); dropping
    it on a persisted array (graph of futures or arrays, no tasks) makes jobs use the
    held blocks. The dask name, hence the cache keys, stay the same.
    """
    data = arr.data
    graph = getattr(data, "__dask_graph__", lambda: None)()
    if graph is None or "framescope_source" not in arr.encoding:
        return arr
    if any(type(v).__name__ not in ("Future", "ndarray") for v in graph.values()):
        return arr  # still lazy: reading straight from the source is the fast path
    out = arr.copy(deep=False)
    out.encoding = {k: v for k, v in arr.encoding.items() if k != "framescope_source"}
    return out
