"""Running user workers and the reducer: the per-worker loop, in-process worker threads and
the sequential reduce stage (results in event order, each once)."""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from framescope.events._classes import EventWorker, Reducer, Result
from framescope.events._former import Event

__all__ = ["ReduceStage", "ThreadWorkers", "WorkerRuntime"]

log = logging.getLogger(__name__)


class WorkerRuntime:
    """One real worker: its user instance and the parameter versions it knows."""

    def __init__(self, worker_cls: type[EventWorker], index: int, version: int,
                 values: dict[str, Any], context: dict[str, Any]) -> None:
        self.index = index
        self.params: dict[int, dict[str, Any]] = {version: values}
        self.latest = version
        self.instance = worker_cls(dict(values), context)
        self.errors = 0

    def set_parameters(self, version: int, values: dict[str, Any]) -> None:
        self.params[version] = values
        self.latest = max(self.latest, version)

    def process(self, event: Event) -> Result:
        """Run the user's ``process_event``; an exception becomes an error result."""
        params = self.params.get(event.parameters_version, self.params[self.latest])
        value, error = None, None
        try:
            value = self.instance.process_event(event, params)
        except Exception as exc:  # user code: one bad event must not end the scan
            self.errors += 1
            error = f"worker {self.index}, event {event.number}: {type(exc).__name__}: {exc}"
            if self.errors <= 3:
                log.exception("%s", error)
        return Result(event.number, value, event.complete, event.reason, event.missing,
                      event.parameters_version, self.index, error)

    def finish(self) -> None:
        try:
            self.instance.finish(self.params[self.latest])
        except Exception:
            log.exception("worker %d: finish failed", self.index)


class ThreadWorkers:
    """Workers as threads of this process (the default: no copies of frames)."""

    kind = "thread"

    def __init__(self, worker_cls: type[EventWorker], n: int, version: int,
                 values: dict[str, Any], context: Callable[[int], dict[str, Any]],
                 deliver: Callable[[Result], None]) -> None:
        self.runtimes = [WorkerRuntime(worker_cls, k, version, values, context(k))
                         for k in range(n)]
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(n)]
        self._deliver = deliver
        self._threads = [threading.Thread(target=self._loop, args=(k,), daemon=True,
                                          name=f"framescope-event-worker-{k}")
                         for k in range(n)]
        for t in self._threads:
            t.start()

    def send(self, k: int, event: Event) -> None:
        self._queues[k].put(("event", event))

    def flush(self) -> None:
        """Nothing waits here: threads get each event at once."""

    def set_parameters(self, version: int, values: dict[str, Any]) -> None:
        for q in self._queues:  # queued ahead of every later event
            q.put(("params", (version, values)))

    def failed(self) -> dict[int, str]:
        return {}

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        for q in self._queues:
            q.put(("stop", None))
        for t in self._threads:
            t.join(timeout)

    def _loop(self, k: int) -> None:
        rt, q = self.runtimes[k], self._queues[k]
        while True:
            kind, item = q.get()
            if kind == "event":
                self._deliver(rt.process(item))
            elif kind == "params":
                rt.set_parameters(*item)
            else:
                rt.finish()
                return


class ReduceStage:
    """The reducer on its own thread: results in event order, each event once.

    Parameters
    ----------
    reducer_cls : type of Reducer
    parameters : framescope.events.Parameters
    context : dict
    on_reduced : callable, optional
        Called (on the reduce thread) with each result after the reducer took it.
    """

    def __init__(self, reducer_cls: type[Reducer], parameters: Any, context: dict[str, Any],
                 on_reduced: Callable[[Result], None] | None = None) -> None:
        self.parameters = parameters
        self.reducer = reducer_cls(parameters.get(0), context)
        self.lock = threading.Lock()  # held while the reducer changes what it publishes
        self.next = 0
        self.duplicates = 0
        self.errors: list[str] = []
        self.error_count = 0
        self._heap: list[tuple[int, int, Result]] = []
        self._pending: set[int] = set()
        self._seq = 0
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._on_reduced = on_reduced
        self._cache: dict[int, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="framescope-reducer")
        self._thread.start()

    def put(self, result: Result) -> None:
        """Hand in a result (any thread)."""
        self._q.put(result)

    def close(self, timeout: float = 30.0) -> None:
        """Reduce what came, then call the reducer's ``finish``."""
        self._q.put(None)
        self._thread.join(timeout)

    def published(self) -> dict[str, Any]:
        """A snapshot of the reducer's published state (arrays copied: consistent)."""
        with self.lock:
            return {k: v.copy() if hasattr(v, "copy") else v
                    for k, v in self.reducer.publish.items()}

    def _params(self, version: int) -> dict[str, Any]:
        p = self._cache.get(version)
        if p is None:
            p = self._cache[version] = self.parameters.get(version)
        return p

    def _loop(self) -> None:
        while True:
            r = self._q.get()
            if r is None:
                break
            if r.event < self.next or r.event in self._pending:
                self.duplicates += 1  # a re-sent event whose first result came
                continue
            self._pending.add(r.event)
            heapq.heappush(self._heap, (r.event, self._seq, r))
            self._seq += 1
            while self._heap and self._heap[0][0] == self.next:
                r = heapq.heappop(self._heap)[2]
                self._pending.discard(r.event)
                self._reduce(r)
        try:
            with self.lock:
                self.reducer.finish(self._params(self.parameters.version))
        except Exception as exc:
            log.exception("reducer finish failed")
            self.errors.append(f"reducer finish: {type(exc).__name__}: {exc}")

    def _reduce(self, r: Result) -> None:
        if r.error:
            self.error_count += 1
            if len(self.errors) < 20:
                self.errors.append(r.error)
        try:
            with self.lock:
                self.reducer.process_result(r, self._params(r.parameters_version))
        except Exception as exc:
            self.error_count += 1
            msg = f"reducer, event {r.event}: {type(exc).__name__}: {exc}"
            if len(self.errors) < 20:
                self.errors.append(msg)
            if self.error_count <= 3:
                log.exception("%s", msg)
        self.next += 1
        if self._on_reduced is not None:
            self._on_reduced(r)
