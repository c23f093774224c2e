"""Where tasks run: in this process (a thread per core, or one thread) or on dask.distributed."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["INLINE", "SYNC", "connected_client", "get_client", "inline_pool", "set_connected"]

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


def set_connected(client: Any) -> Any:
    """Make ``client`` (or None: nothing) the default of every analysis; return the previous.

    Kept here rather than as dask's default client: ``set_as_default`` also sets dask's
    global ``scheduler`` config, which :func:`framescope.connect` leaves to the user.
    """
    with _lock:
        previous, _ = _default.pop("connected", (None, ""))
        if client is not None:  # the address now: a closed client no longer knows it
            _default["connected"] = (client, getattr(client.scheduler, "address", "?"))
        return previous


def connected_client() -> Any:
    """The client of :func:`framescope.connect`, or None (also once it has been closed)."""
    with _lock:
        client, address = _default.get("connected", (None, ""))
        if client is not None and client.status in ("closing", "closed"):
            # closing it undoes connect(); so does a scheduler lost for longer than the
            # client's timeout, which the user must hear about before work moves elsewhere
            del _default["connected"]
            log.warning("the dask client of framescope.connect() (scheduler %s) is closed; "
                        "analyses use the default executor again", address)
            client = None
        return client


def get_client(client: Any = None) -> Any:
    """Resolve the ``client=`` argument of :func:`framescope.run`.

    ``"inline"`` runs in this process, a task per core at a time (:func:`inline_pool`);
    ``"sync"`` one task after another in the calling thread (for debuggers and profilers;
    kernels then use all cores). A ``distributed.Client`` is used as given; a string
    ``"tcp://host:8786"`` connects to that scheduler once per session (as
    :func:`framescope.connect` does, without making it the default). ``None``: the client
    of :func:`framescope.connect` if one is connected, else the current default dask
    client if there is one, else a ``LocalCluster`` of worker processes started on first
    use (on 127.0.0.1, one single-threaded worker per core) and reused for the session.
    """
    if client in (INLINE, SYNC):
        return client
    from distributed import Client, LocalCluster, default_client

    if isinstance(client, Client):
        return client
    if isinstance(client, str):
        from framescope.engine._connect import client_for

        return client_for(client)
    if client is not None:
        raise TypeError(f"client: expected None, 'inline', an address or a Client, "
                        f"found {type(client).__name__}")
    connected = connected_client()
    if connected is not None:
        return connected
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
