"""Receivers of a parallel stream job as long-running tasks on dask workers.

Each receiver is one task pinned to its own worker. It runs :func:`receiver_main`, exactly
what a receiver process runs, and talks to the merging thread over the same ZeroMQ
sockets; dask only starts it, places it and reports its end. The task leaves the worker's
thread pool at once (:func:`distributed.secede`): the receiver works in its own receiver
and analysis threads while the task thread only relays control messages, so holding a
pool slot for the whole experiment would only keep other work off that worker (with one
thread per worker, as framescope's default cluster has, every offline analysis). A
seceded task counts as long-running for the scheduler, which then schedules other tasks
on that worker as usual.

A receiver task ends on "stop" and, on its own, when the merging side has been silent for
``heartbeat_timeout`` s: dask cannot kill a running task, so nothing else would end it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from framescope.engine._connect import INLINE, SYNC, get_client, scheduler_address
from framescope.engine._receiver_task import receiver_main

if TYPE_CHECKING:
    from distributed import Client, Future

__all__ = ["DaskLauncher", "receive_on_worker", "resolve_client"]

log = logging.getLogger(__name__)


def resolve_client(client: Any) -> Client:
    """The ``distributed.Client`` meant by ``client=`` of a stream job (:func:`framescope.submit`).

    ``"default"``: the cluster of :func:`framescope.connect`, else dask's default client,
    else framescope's own LocalCluster (as :func:`framescope.engine.get_client` with
    ``None``); another string is a scheduler address; a ``Client`` is used as given.
    """
    from distributed import Client

    if isinstance(client, Client):
        return client
    if isinstance(client, str):
        if client in (INLINE, SYNC):
            raise ValueError(f"client: receivers need a dask cluster; expected a "
                             f"distributed.Client, 'default' or a scheduler address, found "
                             f"{client!r} (for receivers in this machine's processes leave "
                             "client= out)")
        if client == "default":  # receivers need processes: never the in-process default
            return get_client(None, processes=True)
        return get_client(client)
    raise TypeError(f"client: expected a distributed.Client, 'default' or a scheduler "
                    f"address, found {type(client).__name__}")


def receive_on_worker(config: dict[str, Any], udfs: dict[str, Any]) -> dict[str, Any]:
    """The dask task of one receiver: :func:`receiver_main` outside the worker's thread pool.

    Returns the receiver's summary (``worker``, ``pid``, ``host``, ``where``,
    ``frames_received``).

    Raises
    ------
    RuntimeError
        The receiver could not start, or never heard from the merging side.
    """
    from distributed import get_worker, secede

    address = get_worker().address
    secede()
    # the worker's logging is the worker's: no basicConfig here
    summary = receiver_main({**config, "where": address, "configure_logging": False,
                           "watch_parent": False}, udfs)
    if "error" in summary:
        raise RuntimeError(f"{summary['error']} (on dask worker {address})")
    return summary


class DaskLauncher:
    """Start ``n`` receivers as long-running tasks, one on each of ``n`` distinct workers.

    Parameters
    ----------
    client : distributed.Client or str
        See :func:`resolve_client`.
    n : int
        Receivers to start.

    Raises
    ------
    ValueError
        The cluster has fewer than ``n`` workers.
    """

    kind = "dask task"

    def __init__(self, client: Any, n: int) -> None:
        self.client = resolve_client(client)
        workers = sorted(self.client.nthreads())  # every worker (scheduler_info() caps it)
        if n > len(workers):
            raise ValueError(
                f"processes={n}: expected at most one receiver per dask worker, but the "
                f"cluster at {scheduler_address(self.client)} has {len(workers)} worker(s)"
                f"{': ' + ', '.join(workers) if workers else ''}")
        self.workers: list[str] = workers[:n]
        self.futures: list[Future] = []

    def launch(self, configs: list[dict[str, Any]], udfs: dict[str, Any]) -> None:
        token = uuid.uuid4().hex[:8]
        for config, address in zip(configs, self.workers, strict=True):
            self.futures.append(self.client.submit(
                receive_on_worker, config, udfs, key=f"framescope-receiver-{config['worker']}"
                f"-{token}", pure=False, workers=[address], allow_other_workers=False))
        log.info("receivers started as dask tasks on %s", ", ".join(self.workers))

    def failed(self) -> dict[int, str]:
        out = {}
        for k, (fut, address) in enumerate(zip(self.futures, self.workers, strict=False)):
            if fut.status == "error":
                out[k] = f"{address}: {fut.exception(timeout=1)}"
            elif fut.done():
                out[k] = f"{address}: task {fut.status}"
        return out

    def join(self, timeout: float, lost: Collection[int] = ()) -> None:
        gone = [f for k, f in enumerate(self.futures) if k in lost]
        if gone:  # a lost receiver's task never ends by itself (pinned to a dead worker)
            self.client.cancel(gone)
        # polled, not distributed.wait: that one uses dask's default client, and
        # framescope's own clients are not made the default
        live = [f for k, f in enumerate(self.futures) if k not in lost]
        deadline = time.monotonic() + timeout
        while not all(f.done() for f in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not all(f.done() for f in live):
            late = [a for f, a in zip(self.futures, self.workers, strict=False) if not f.done()]
            # cancelling releases the tasks; their threads end at the heartbeat timeout
            log.warning("receiver tasks on %s did not stop within %.0f s; cancelling them",
                        ", ".join(late), timeout)
            self.client.cancel(self.futures)
        for fut, address in zip(self.futures, self.workers, strict=False):
            if fut.status == "error":
                log.warning("receiver task on %s failed: %s", address, fut.exception())
