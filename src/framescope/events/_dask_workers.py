"""Event workers as long-running tasks on dask workers, one per dask worker.

Each task leaves the worker's thread pool (:func:`distributed.secede`) and talks to the job
over one DEALER socket: events and parameter versions come in, in order (a version always
arrives before the first event sent with it), results go out. Messages are a JSON head and
raw array parts (:mod:`framescope.events._codec`); the worker class itself travels the way
dask ships every task. A task ends on "stop", or on its own when the job has been silent for
``heartbeat_timeout`` s (dask cannot kill a running task).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import time
import uuid
from typing import Any

from framescope.engine import decode_message, encode_message
from framescope.events._classes import EventWorker, Result
from framescope.events._codec import (
    decode_events,
    decode_results,
    encode_events,
    encode_results,
)
from framescope.events._former import Event
from framescope.events._runtime import WorkerRuntime

__all__ = ["DaskWorkers", "event_worker_main"]

log = logging.getLogger(__name__)

PING_EVERY = 1.0
_BATCH = 32  # events per message at most


def event_worker_main(config: dict[str, Any], worker_cls: type[EventWorker]) -> dict[str, Any]:
    """The loop of one event worker (a dask task, or any process): returns its summary."""
    import zmq

    k = config["index"]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(config["control"])
    where = {"worker": k, "pid": os.getpid(), "host": socket.gethostname(),
             "where": config.get("where")}
    context = {**config["context"], "headers": {}}
    rt = WorkerRuntime(worker_cls, k, config["version"], config["values"], context)
    sock.send_multipart(encode_message({"kind": "hello", **where}))
    timeout = float(config.get("heartbeat_timeout", 10.0))
    last, next_alive, events = time.monotonic(), 0.0, 0
    try:
        while True:
            if sock.poll(50):
                head, arrays = decode_message(sock.recv_multipart(copy=False))
                last = time.monotonic()
                kind = head.get("kind")
                if kind == "events":
                    rows = []
                    for ev in decode_events(head, arrays):
                        r = rt.process(ev)
                        rows.append(({"event": r.event, "version": r.parameters_version,
                                      "worker": k, "complete": r.complete,
                                      "reason": r.reason, "missing": r.missing,
                                      "error": r.error}, r.value))
                    sock.send_multipart(encode_results(k, rows), copy=False)
                    events += len(rows)
                elif kind == "params":
                    rt.set_parameters(head["version"], head["values"])
                elif kind == "header":
                    context["headers"][head["stream"]] = head["header"]
                elif kind == "stop":
                    break
            now = time.monotonic()
            if now >= next_alive:
                sock.send_multipart(encode_message({"kind": "alive", "worker": k}))
                next_alive = now + PING_EVERY
            if now - last > timeout:
                log.warning("event worker %d: no message from the job for %.0f s; stopping",
                            k, now - last)
                break
    finally:
        rt.finish()
        sock.send_multipart(encode_message({"kind": "bye", "worker": k, "events": events,
                                            "errors": rt.errors}))
        sock.close()
        ctx.term()
    return {**where, "events": events, "errors": rt.errors}


def _on_dask_worker(config: dict[str, Any], worker_cls: type[EventWorker]) -> dict[str, Any]:
    from distributed import get_worker, secede

    address = get_worker().address
    secede()
    return event_worker_main({**config, "where": address}, worker_cls)


class DaskWorkers:
    """``n`` event workers as long-running tasks on ``n`` distinct dask workers.

    All socket work happens in :meth:`poll`, :meth:`send` and :meth:`stop`, called from the
    job's dispatch thread only; :meth:`set_parameters` may be called from any thread.
    """

    kind = "dask task"

    def __init__(self, client: Any, worker_cls: type[EventWorker], n: int, version: int,
                 values: dict[str, Any], context: Any, deliver: Any, *,
                 host: str = "127.0.0.1", heartbeat_timeout: float = 10.0,
                 lost_after: float = 5.0, start_timeout: float = 60.0) -> None:
        import zmq
        from distributed import Client

        from framescope.engine import get_client

        self.client = client if isinstance(client, Client) else get_client(client)
        if not isinstance(self.client, Client):
            raise TypeError(f"client: event workers on dask need a distributed cluster, "
                             f"found {client!r}")
        addresses = sorted(self.client.nthreads())
        if n > len(addresses):
            raise ValueError(f"workers={n}: expected at most one event worker per dask "
                             f"worker, but the cluster has {len(addresses)}")
        self.addresses = addresses[:n]
        self._deliver, self.lost_after = deliver, lost_after
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(f"tcp://{host}:0")
        control = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._ident: dict[int, bytes] = {}
        self._heard: dict[int, float] = {}
        self.hellos: dict[int, dict[str, Any]] = {}
        self.byes: dict[int, dict[str, Any]] = {}
        self._params: queue.SimpleQueue = queue.SimpleQueue()
        self._out: dict[int, list[Event]] = {}
        self.known_version = version
        self._next_ping = 0.0
        token = uuid.uuid4().hex[:8]
        self.futures = [self.client.submit(
            _on_dask_worker, {"index": k, "control": control, "version": version,
                              "values": values, "context": context(k),
                              "heartbeat_timeout": heartbeat_timeout},
            worker_cls, key=f"framescope-event-worker-{k}-{token}", pure=False,
            workers=[a], allow_other_workers=False) for k, a in enumerate(self.addresses)]
        deadline = time.monotonic() + start_timeout
        while len(self.hellos) < n:
            if time.monotonic() > deadline:
                self.stop(1.0)
                raise TimeoutError(f"event workers: {len(self.hellos)} of {n} started on "
                                   f"{', '.join(self.addresses)} within {start_timeout:g} s")
            bad = self.failed()
            if bad:
                self.stop(1.0)
                raise RuntimeError(f"event workers could not start: {bad}")
            self.poll(0.05)

    def send(self, k: int, event: Event) -> None:
        """Queue ``event`` for worker ``k``; :meth:`flush` sends the queued ones."""
        self._out.setdefault(k, []).append(event)

    def flush(self) -> None:
        """Send each worker its queued events as one message (fewer, larger messages: the
        per-message cost is most of the cost of a small event)."""
        for k, events in self._out.items():
            for at in range(0, len(events), _BATCH):
                self._sock.send_multipart([self._ident[k], *encode_events(
                    events[at : at + _BATCH])], copy=False)
        self._out.clear()

    def send_header(self, stream: str, header: dict[str, Any]) -> None:
        msg = json.dumps({"kind": "header", "stream": stream, "header": header,
                          "arrays": []}).encode()
        for ident in self._ident.values():
            self._sock.send_multipart([ident, msg])

    def set_parameters(self, version: int, values: dict[str, Any]) -> None:
        self._params.put((version, values))

    def _flush_params(self) -> None:
        self.flush()  # events queued before a new version go with the old one
        while not self._params.empty():
            version, values = self._params.get()
            msg = json.dumps({"kind": "params", "version": version, "values": values,
                              "arrays": []}).encode()
            for ident in self._ident.values():
                self._sock.send_multipart([ident, msg])
            self.known_version = version

    def poll(self, timeout: float) -> None:
        """Send what waits (parameters, pings) and take in what came, for up to ``timeout`` s."""
        import zmq

        self._flush_params()
        now = time.monotonic()
        if now >= self._next_ping and self._ident:
            ping = json.dumps({"kind": "ping", "arrays": []}).encode()
            for ident in self._ident.values():
                self._sock.send_multipart([ident, ping])
            self._next_ping = now + PING_EVERY
        if not self._sock.poll(int(timeout * 1000)):
            return
        for _ in range(256):
            ident, *parts = self._sock.recv_multipart(copy=False)
            head, arrays = decode_message(parts)
            k = head.get("worker")
            self._heard[k] = time.monotonic()
            kind = head.get("kind")
            if kind == "results":
                for h, value in decode_results(head, arrays):
                    self._deliver(Result(h["event"], value, h["complete"], h["reason"],
                                         h["missing"], h["version"], k, h.get("error")))
            elif kind == "hello":
                self._ident[k] = ident.bytes
                self.hellos[k] = head
            elif kind == "bye":
                self.byes[k] = head
            if not self._sock.poll(0, zmq.POLLIN):
                break

    def failed(self) -> dict[int, str]:
        """Workers (by index) that ended or went silent, each with why."""
        out = {}
        now = time.monotonic()
        for k, (fut, address) in enumerate(zip(self.futures, self.addresses, strict=True)):
            if k in self.byes:
                continue
            if fut.status == "error":
                out[k] = f"dask worker {address}: {fut.exception(timeout=1)}"
            elif fut.done():
                out[k] = f"dask worker {address}: task {fut.status}"
            elif k in self._heard and now - self._heard[k] > self.lost_after:
                out[k] = f"dask worker {address}: no message for {now - self._heard[k]:.1f} s"
        return out

    def stop(self, timeout: float = 10.0, lost: set[int] | frozenset = frozenset()) -> None:
        """Stop every worker (each calls its instance's ``finish``) and close the socket."""
        self._out = {k: v for k, v in self._out.items() if k not in lost}
        self._flush_params()
        stop = json.dumps({"kind": "stop", "arrays": []}).encode()
        for k, ident in self._ident.items():
            if k not in lost:
                self._sock.send_multipart([ident, stop])
        gone = [f for k, f in enumerate(self.futures) if k in lost]
        if gone:
            self.client.cancel(gone)
        deadline = time.monotonic() + timeout
        live = [f for k, f in enumerate(self.futures) if k not in lost]
        while not all(f.done() for f in live) and time.monotonic() < deadline:
            self.poll(0.05)
        if not all(f.done() for f in live):
            log.warning("event worker tasks did not stop within %.0f s; cancelling", timeout)
            self.client.cancel(self.futures)
        self._sock.close()
        self._ctx.term()
