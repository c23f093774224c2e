"""Real ZeroMQ sockets on 127.0.0.1 (free ports), senders in threads or processes."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from framescope.live import simulate_stream


def until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``cond`` (no timing asserts: the timeout only guards against hangs)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def push() -> Iterator[tuple[zmq.Socket, str]]:
    """A PUSH socket bound to a free port, for hand-made messages."""
    sock = zmq.Context.instance().socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDTIMEO, 20_000)
    sock.bind("tcp://127.0.0.1:0")
    try:
        yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    finally:
        sock.close(linger=0)


def _simulate(q, kwargs) -> None:
    simulate_stream("tcp://127.0.0.1:0", on_bound=q.put, **kwargs)


@contextlib.contextmanager
def simulator_thread(**kwargs) -> Iterator[str]:
    """``simulate_stream(**kwargs)`` in a thread (cheaper than a process); yields endpoint."""
    q: queue.Queue = queue.Queue()
    t = threading.Thread(target=_simulate, args=(q, kwargs), daemon=True)
    t.start()
    try:
        yield q.get(timeout=60)
    finally:
        t.join(timeout=30)


def process_context() -> mp.context.BaseContext:
    """Fork server with framescope preloaded: one slow import, then cheap processes."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["framescope.live"])
    return ctx


@contextlib.contextmanager
def simulator_process(**kwargs) -> Iterator[tuple[str, mp.Process]]:
    """``simulate_stream(**kwargs)`` in another process; yields (endpoint, process)."""
    ctx = process_context()
    q = ctx.Queue()
    p = ctx.Process(target=_simulate, args=(q, kwargs), daemon=True)
    p.start()
    try:
        yield q.get(timeout=60), p
    finally:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
            p.join()
