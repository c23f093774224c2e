"""An event job: streams → trigger map → workers → the sequential reducer.

Threads of this process: one receiver per stream (:class:`framescope.live.StreamReceiver`),
one dispatcher (forms events as their frames come, sends each to a worker, within
``max_inflight`` per worker; owns the worker sockets), the reducer, and the workers
themselves when they are threads. Workers on dask run as long-running tasks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from framescope.events._classes import EventWorker, Reducer, Result
from framescope.events._former import Event, EventFormer
from framescope.events._http import ResultsServer
from framescope.events._nexus import write_nexus
from framescope.events._params import Parameters
from framescope.events._record import StreamsRecorder
from framescope.events._runtime import ReduceStage, ThreadWorkers
from framescope.events._triggermap import TriggerMap
from framescope.live import StreamReceiver
from framescope.live._messages import jsonable

__all__ = ["EventJob"]

log = logging.getLogger(__name__)


class EventJob:
    """A running event job (made by :func:`framescope.events.submit`)."""

    def __init__(self, streams: Mapping[str, tuple[str, str]], trigger_map: TriggerMap,
                 worker: type[EventWorker], reducer: type[Reducer], *,
                 parameters: Parameters, workers: int = 1, client: Any = None,
                 timeout: float = 10.0, reorder_grace: float = 0.5, max_inflight: int = 64,
                 context: Mapping[str, Any] | None = None, http: bool | int = False,
                 http_host: str = "127.0.0.1", token: str | None = None,
                 record: str | os.PathLike[str] | None = None) -> None:
        missing = set(trigger_map.streams) - set(streams)
        if missing:
            raise ValueError(f"streams: the trigger map names {sorted(missing)}, which "
                             f"streams= does not give (it gives {sorted(streams)})")
        if workers < 1:
            raise ValueError(f"workers: expected >= 1, found {workers}")
        self.trigger_map, self.parameters = trigger_map, parameters
        self.n_workers, self.max_inflight = workers, max_inflight
        self.headers: dict[str, dict[str, Any]] = {}
        self._base = {**(context or {}), "streams": list(trigger_map.streams),
                      "n_workers": workers}
        self.state = "starting"
        self.errors: list[str] = []
        self.lost: dict[int, str] = {}
        self.reassigned = 0
        self._inflight: list[dict[int, Event]] = [{} for _ in range(workers)]
        self._vmap: dict[int, int] = {}
        self._rr = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._finished = threading.Event()
        self._header_q: deque = deque()
        self.started = time.monotonic()
        self.ended: float | None = None
        self.first_reduced: float | None = None
        self.started_at = time.time()
        # one row per reduced event, for the NeXus file: event, version, complete, worker
        self._log: list[tuple[int, int, bool, int]] = []
        self._reasons: dict[int, str] = {}
        self._classes = {"worker": f"{worker.__module__}.{worker.__qualname__}",
                         "reducer": f"{reducer.__module__}.{reducer.__qualname__}"}

        receivers = {name: (ep, proto) for name, (ep, proto) in streams.items()
                     if name in trigger_map.streams}
        self.recorder: StreamsRecorder | None = None
        if record is not None:
            self.recorder = StreamsRecorder(record, {n: p for n, (_, p) in receivers.items()})
        tap = None if self.recorder is None else self.recorder.add
        # the receivers hand frames to this job (their sink) only once started
        self.receivers = {name: StreamReceiver(name, ep, proto, self, tap=tap)
                          for name, (ep, proto) in receivers.items()}
        self.former = EventFormer(trigger_map,
                                  {n: r.counters for n, r in self.receivers.items()},
                                  timeout=timeout, reorder_grace=reorder_grace)
        self.reduce = ReduceStage(reducer, parameters, {
            **self._base, "trigger_map": trigger_map.to_json()}, self._on_reduced)
        version, values = parameters.snapshot()
        if client is None or client == "inline":
            self.workers: Any = ThreadWorkers(worker, workers, version, values,
                                              self._context, self._deliver)
            self.workers.known_version = version
        else:
            from framescope.events._dask_workers import DaskWorkers

            self.workers = DaskWorkers(client, worker, workers, version, values,
                                       self._context, self._deliver)
        self._unsubscribe = parameters.subscribe(self._forward_parameters)
        self.server: ResultsServer | None = None
        if http is not False:
            port = 0 if http is True else int(http)
            self.server = ResultsServer(self.published, parameters, lambda: self.status,
                                        host=http_host, port=port, token=token).start()
        for r in self.receivers.values():
            r.start()
        self.former.started = time.monotonic()
        self._thread = threading.Thread(target=self._dispatch_loop, daemon=True,
                                        name="framescope-event-dispatch")
        self.state = "running"
        self._thread.start()

    # -- user API --------------------------------------------------------------------------
    def set_parameters(self, changes: Mapping[str, Any] | None = None, **values: Any) -> int:
        """Change parameters during the scan; returns the new version. Events formed from
        now on carry it; every result records the version it was computed with."""
        return self.parameters.update(changes, **values)

    def extend_map(self, events: Any) -> int:
        """Append events to the (open) trigger map; returns its length."""
        n = self.trigger_map.extend(events)
        self._wake()
        return n

    def close_map(self) -> None:
        """No event will follow: the job ends once every event is reduced."""
        self.trigger_map.close()
        self._wake()

    def published(self) -> dict[str, Any]:
        """A consistent snapshot of what the reducer publishes now."""
        return self.reduce.published()

    @property
    def http_url(self) -> str | None:
        """Base URL of the HTTP view (``/results``, ``/parameters``, ``/status``), if any."""
        return None if self.server is None else self.server.url

    def close(self) -> None:
        """Stop the job if it runs, and the HTTP view (which outlives the job until now)."""
        self.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def write_nexus(self, path: str | os.PathLike[str], title: str = "framescope event job",
                    ) -> Path:
        """The reducer's published state, per-event records (parameter version, complete,
        reason, worker), the trigger map, every parameter version, the status and the
        framescope version (and git commit) as NeXus/HDF5; see
        :func:`framescope.events.write_nexus`. Best after the job ended."""
        rows = list(self._log)
        events = {"event": np.array([r[0] for r in rows], np.int64),
                  "parameters_version": np.array([r[1] for r in rows], np.int64),
                  "complete": np.array([r[2] for r in rows], bool),
                  "worker": np.array([r[3] for r in rows], np.int64),
                  "reason": [self._reasons.get(r[0], "") for r in rows]}
        ended = None if self.ended is None else self.started_at + (self.ended - self.started)
        return write_nexus(path, published=self.published(),
                           trigger_map=self.trigger_map.to_json(),
                           parameters=self.parameters.history(), status=self.status,
                           events=events, classes=self._classes, started=self.started_at,
                           ended=ended, title=title)

    @property
    def reducer(self) -> Reducer:
        """The reducer instance (read it after the job ended; while running use
        :meth:`published`)."""
        return self.reduce.reducer

    def done(self) -> bool:
        """Whether the job ended (finished or stopped)."""
        return self._finished.is_set()

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the end of the job; the reducer's published state.

        Raises
        ------
        TimeoutError
            The job did not end within ``timeout`` s (it goes on; :meth:`stop` ends it).
        """
        if not self._finished.wait(timeout):
            raise TimeoutError(f"event job still running after {timeout} s: "
                               f"{self.reduce.next} of {len(self.trigger_map)} events reduced")
        return self.published()

    def stop(self, timeout: float = 30.0) -> None:
        """End the job now: events not formed yet are not; what was reduced stays."""
        self._stopping.set()
        self._wake()
        self._finished.wait(timeout)

    def __enter__(self) -> EventJob:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def status(self) -> dict[str, Any]:
        """Streams' counters, events formed/incomplete (by reason)/reduced, workers, rate."""
        f, red = self.former, self.reduce
        end = self.ended or time.monotonic()
        rate = 0.0
        if self.first_reduced is not None and red.next > 1 and end > self.first_reduced:
            rate = (red.next - 1) / (end - self.first_reduced)
        buffered = f.buffered()
        streams = {n: {**r.counters.as_dict(), "buffered": buffered[n],
                       "dropped": f.dropped[n], "late": f.late[n]}
                   for n, r in self.receivers.items()}
        with self._lock:
            inflight = [len(d) for d in self._inflight]
        return {"state": self.state, "events": len(self.trigger_map),
                "map_closed": self.trigger_map.closed, "formed": f.next,
                "incomplete": f.incomplete, "incomplete_by": dict(f.reasons),
                "reduced": red.next, "duplicates": red.duplicates, "errors": red.error_count,
                "last_errors": [*red.errors[-5:], *self.errors[-5:]],
                "workers": {"kind": self.workers.kind, "n": self.n_workers,
                            "inflight": inflight, "lost": dict(self.lost),
                            "reassigned": self.reassigned},
                "parameters_version": self.parameters.version, "streams": streams,
                "elapsed_s": end - self.started, "events_per_s": rate}

    # -- the receivers' sink (receiver threads) --------------------------------------------
    def on_start(self, stream: str, start: Any) -> None:
        header = jsonable({**start.header, "series": start.series,
                           "n_frames": start.n_frames}) or {}
        self.headers[stream] = header
        self._header_q.append((stream, header))
        self.former.on_start(stream, start)

    def on_frame(self, stream: str, index: int, payload: Any, nbytes: int) -> None:
        self.former.on_frame(stream, index, payload, nbytes)

    def on_end(self, stream: str, end: Any) -> None:
        self.former.on_end(stream, end)

    # -- internals -------------------------------------------------------------------------
    def _context(self, k: int) -> dict[str, Any]:
        # thread workers share this dict's headers (filled as series start)
        return {**self._base, "index": k, "headers": self.headers}

    def _forward_parameters(self, version: int, values: dict[str, Any]) -> None:
        self.workers.set_parameters(version, values)
        if self.workers.kind == "thread":
            self.workers.known_version = version

    def _wake(self) -> None:
        with self.former.cond:
            self.former.cond.notify_all()

    def _deliver(self, r: Result) -> None:
        with self._lock:
            self._inflight[r.worker].pop(r.event, None)
        self.reduce.put(r)

    def _on_reduced(self, r: Result) -> None:
        if self.first_reduced is None:
            self.first_reduced = time.monotonic()
        self._log.append((r.event, r.parameters_version, r.complete, r.worker))
        if r.reason or r.error:
            self._reasons[r.event] = "; ".join(x for x in (r.reason, r.error) if x)

    def _live(self) -> list[int]:
        return [k for k in range(self.n_workers) if k not in self.lost]

    def _target(self, event: Event) -> int | None:
        """The real worker for ``event``, or None when it must wait for room."""
        live = self._live()
        with self._lock:
            load = {k: len(self._inflight[k]) for k in live}
        if event.worker is not None and event.worker in self._vmap:
            k = self._vmap[event.worker]
            if k in load:
                return k if load[k] < self.max_inflight else None
        k = min(live, key=lambda w: (load[w], (w - self._rr) % len(self._inflight)))
        if load[k] >= self.max_inflight:
            return None
        self._rr = k + 1
        if event.worker is not None:
            self._vmap[event.worker] = k
        return k

    def _send(self, event: Event, k: int) -> None:
        with self._lock:
            self._inflight[k][event.number] = event
        self.workers.send(k, event)

    def _check_workers(self, backlog: deque) -> None:
        for k, why in self.workers.failed().items():
            if k in self.lost:
                continue
            msg = f"event worker {k} ({self.workers.kind}) lost: {why}"
            log.warning("%s; its events go to the others", msg)
            self.lost[k] = why
            self.errors.append(msg)
            with self._lock:
                orphans = list(self._inflight[k].values())
                self._inflight[k].clear()
            self._vmap = {v: w for v, w in self._vmap.items() if w != k}
            self.reassigned += len(orphans)
            backlog.extendleft(reversed(sorted(orphans, key=lambda e: e.number)))

    def _dispatch_loop(self) -> None:
        backlog: deque[Event] = deque()
        dask = self.workers.kind != "thread"
        try:
            while not self._stopping.is_set():
                if dask:
                    while self._header_q:
                        self.workers.send_header(*self._header_q.popleft())
                    self.workers.poll(0.0 if backlog else 0.002)
                self._check_workers(backlog)
                if not self._live():
                    self._give_up_all(backlog, "every event worker was lost")
                    break
                if len(backlog) < 1024:
                    version = self.workers.known_version
                    for ev in self.former.form(limit=1024 - len(backlog)):
                        ev.parameters_version = version
                        backlog.append(ev)
                while backlog:
                    k = self._target(backlog[0])
                    if k is None:
                        break
                    self._send(backlog.popleft(), k)
                self.workers.flush()
                with self._lock:
                    busy = any(self._inflight)
                if self.former.done and not backlog and not busy:
                    break
                if not dask and not backlog:
                    with self.former.cond:
                        self.former.cond.wait(0.01)
                elif not dask:
                    time.sleep(0.0005)  # every worker is full: let them work
        except Exception as exc:
            log.exception("event dispatch failed")
            self.errors.append(f"dispatch: {type(exc).__name__}: {exc}")
        finally:
            self._finish()

    def _give_up_all(self, backlog: deque, why: str) -> None:
        for ev in backlog:
            self.reduce.put(Result(ev.number, None, False, why, ev.missing,
                                   ev.parameters_version, -1, why))

    def _finish(self) -> None:
        stopped = self._stopping.is_set()
        try:
            if self.workers.kind == "thread":
                self.workers.stop()
            else:
                self.workers.stop(lost=set(self.lost))
        except Exception as exc:
            log.exception("stopping the event workers failed")
            self.errors.append(f"workers: {type(exc).__name__}: {exc}")
        self.reduce.close()
        for r in self.receivers.values():
            r.stop()
        if self.recorder is not None:
            self.recorded = self.recorder.close(
                {n: r.counters.ended for n, r in self.receivers.items()})
        self._unsubscribe()
        self.ended = time.monotonic()
        self.state = "stopped" if stopped else "finished"
        self._finished.set()
