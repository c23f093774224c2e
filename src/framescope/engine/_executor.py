"""Where tasks run: in this process (a thread per core, or one thread) or on dask.distributed."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["INLINE", "SYNC", "get_client", "inline_pool"]

log = logging.getLogger(__name__)

INLINE = "inline"
SYNC = "sync"
_lock = threading.Lock()
_default: dict[str, Any] = {}


def inline_pool() -> ThreadPoolExecutor:
    """The process-wide thread pool of the inline executor: one thread per core.

    Each thread runs whole tasks with single-threaded kernels (numba kernels release the
    GIL). On a busy machine this degrades gracefully, where one kernel split across all
    cores waits for its slowest, possibly descheduled, thread: measured on 2 loaded cores,
    a ring ran 31 vs 2.2-30 GB/s and a sum frame 29 vs 3-21 GB/s.
    """
    with _lock:
        pool = _default.get("pool")
        if pool is None:
            pool = _default["pool"] = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="framescope-inline")
        return pool


def get_client(client: Any = None) -> Any:
    """Resolve the ``client=`` argument of :func:`framescope.run`.

    ``"inline"`` runs in this process, a task per core at a time (:func:`inline_pool`);
    ``"sync"`` one task after another in the calling thread (for debuggers and profilers;
    kernels then use all cores). A ``distributed.Client`` is used as given; a string
    ``"tcp://host:8786"`` connects to that scheduler. ``None``: the current default client
    if there is one, else a ``LocalCluster`` of worker processes started on first use (on
    127.0.0.1, one single-threaded worker per core) and reused for the session.
    """
    if client in (INLINE, SYNC):
        return client
    from distributed import Client, LocalCluster, default_client

    if isinstance(client, Client):
        return client
    if isinstance(client, str):
        return Client(client, set_as_default=False)
    if client is not None:
        raise TypeError(f"client: expected None, 'inline', an address or a Client, "
                        f"found {type(client).__name__}")
    try:
        return default_client()
    except ValueError:
        pass
    with _lock:
        if "client" not in _default or _default["client"].status == "closed":
            n = os.cpu_count() or 1
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=":0")
            _default["client"] = Client(cluster, set_as_default=False)
            log.info("started a LocalCluster with %d workers: %s", n,
                     _default["client"].dashboard_link)
        return _default["client"]
