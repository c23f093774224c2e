"""Where tasks run: inline (this process) or a dask.distributed cluster."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

__all__ = ["INLINE", "get_client"]

log = logging.getLogger(__name__)

INLINE = "inline"
_lock = threading.Lock()
_default: dict[str, Any] = {}


def get_client(client: Any = None) -> Any:
    """Resolve the ``client=`` argument of :func:`framescope.run`.

    ``"inline"`` runs in this process. A ``distributed.Client`` is used as given; a string
    ``"tcp://host:8786"`` connects to that scheduler. ``None``: the current default client
    if there is one, else a ``LocalCluster`` of worker processes started on first use (on
    127.0.0.1, one single-threaded worker per core) and reused for the session.
    """
    if client == INLINE:
        return INLINE
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
