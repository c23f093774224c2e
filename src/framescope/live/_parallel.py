"""Several receivers PULL from one detector PUSH socket; their partials merge here.

PUSH deals messages round-robin, so each receiver sees a share of the frames, and only one
sees a series' header or end. Every receiver therefore needs the scan shape up front (frames
carry their own shape and dtype); the receiver that gets the end reports it, and this
process tells the others to finish the series once their socket has been quiet for
``end_grace`` s. Partial results are merged into the same :class:`Accumulator` as offline.

Where the receivers run is a :class:`Launcher`: child processes (:class:`ProcessLauncher`,
the default) or long-running tasks on dask workers
(:class:`~framescope.live._dask_receivers.DaskLauncher`); the merging is the same.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import queue
import threading
import time
from typing import Any, Protocol

import numpy as np
import xarray as xr
import zmq

from framescope.engine import Accumulator
from framescope.live._messages import MessageError, ScanOrder
from framescope.live._run import publish, udf_dict
from framescope.live._scan import Series
from framescope.live._status import Status
from framescope.live._wire import decode_message, partial_of
from framescope.live._worker import HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT, worker_main
from framescope.udf._base import Meta

__all__ = ["Launcher", "ParallelRun", "ProcessLauncher"]

log = logging.getLogger(__name__)

_SUMMED = ("frames_received", "frames_processed", "bytes_received", "rate_hz", "mb_per_s",
           "dropped", "spilled", "spill_pending", "malformed", "duplicates", "out_of_order",
           "queue_depth", "queue_capacity")
_WILDCARDS = ("*", "0.0.0.0", "::", "")
_BYE_TIMEOUT = 10.0  # s to wait, at stop, for receivers' last partials


class Launcher(Protocol):
    """Where the receivers of a :class:`ParallelRun` run: starts, watches and ends them."""

    kind: str  # "process", "dask task": for messages

    def launch(self, configs: list[dict[str, Any]], udfs: dict[str, Any]) -> None:
        """Start one receiver per config (each calls :func:`worker_main` with it)."""

    def failed(self) -> list[str]:
        """Receivers that have ended, each with why (checked while waiting for hellos)."""

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the receivers to end (after "stop"); force the rest."""


class ProcessLauncher:
    """Receivers as child processes of this one (the default of :class:`ParallelRun`).

    Parameters
    ----------
    mp_context : str or multiprocessing context
        How the processes start ("spawn", "forkserver").
    """

    kind = "process"

    def __init__(self, mp_context: str | mp.context.BaseContext = "spawn") -> None:
        self._ctx = mp.get_context(mp_context) if isinstance(mp_context, str) else mp_context
        self._procs: list[Any] = []

    def launch(self, configs: list[dict[str, Any]], udfs: dict[str, Any]) -> None:
        for config in configs:
            # own processes: their logging is ours to set up; they also watch their parent
            config = {**config, "configure_logging": True, "watch_parent": True,
                      "log_level": logging.getLogger("framescope").getEffectiveLevel()}
            p = self._ctx.Process(target=worker_main, args=(config, udfs), daemon=True,
                                  name=f"framescope-receiver-{config['worker']}")
            p.start()
            self._procs.append(p)

    def failed(self) -> list[str]:
        return [f"{p.name} exited with code {p.exitcode}"
                for p in self._procs if not p.is_alive()]

    def join(self, timeout: float) -> None:
        for p in self._procs:
            p.join(timeout)
            if p.is_alive():
                log.warning("receiver process %s did not stop; terminating it", p.name)
                p.terminate()
                p.join(5)


class ParallelRun:
    """Live analysis in ``processes`` receivers sharing one PUSH stream, merged here.

    Same interface as :class:`LiveRun` (``status``, ``snapshot()``, ``wait()``,
    ``latest_frame()``, ``stop()``); create it with ``ZMQSource.run(udfs, processes=N)``
    (receiver processes) or ``ZMQSource.run(udfs, processes=N, client=client)`` (receivers
    as long-running tasks on N dask workers).

    Duplicate frames that reach different receivers are counted in ``duplicates`` but both
    are analysed: nav results keep one, summed (``sig``/``single``) results include both.

    Parameters
    ----------
    launcher : Launcher, optional
        Where the receivers run; default :class:`ProcessLauncher` with ``mp_context``.
    merge_host : str
        Interface the merging sockets bind, and the address receivers connect to: the
        default 127.0.0.1 serves receivers on this machine; receivers on other hosts need
        an address of this machine that they reach (not a wildcard). The sockets then accept
        connections from the network; they carry JSON heads and raw arrays only.
    heartbeat_timeout : float
        Seconds without a message from here after which a receiver stops on its own.
    """

    def __init__(self, endpoint: str, protocol: str, udfs: Any, *, processes: int = 2,
                 scan: tuple[int, int] | None, order: ScanOrder | None = None,
                 source_options: dict[str, Any] | None = None, end_grace: float = 0.25,
                 mp_context: str | mp.context.BaseContext = "spawn",
                 launcher: Launcher | None = None, merge_host: str = "127.0.0.1",
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
                 start_timeout: float = 120.0) -> None:
        if processes < 1:
            raise ValueError(f"processes: expected >= 1, found {processes}")
        if scan is None and processes > 1:
            raise ValueError("several receivers need scan=(ny, nx): only one of them "
                             "receives the series header")
        if merge_host.strip("[]") in _WILDCARDS:
            raise ValueError(f"merge_host: expected an address of this machine that the "
                             f"receivers can connect to, found the wildcard {merge_host!r}")
        if not heartbeat_timeout > HEARTBEAT_EVERY:
            raise ValueError(f"heartbeat_timeout: expected more than {HEARTBEAT_EVERY} s "
                             f"(the ping interval), found {heartbeat_timeout!r}")
        self.endpoint, self.protocol, self.processes = endpoint, protocol, processes
        self.udfs = udf_dict(udfs)
        self.policy = (source_options or {}).get("policy", "drop")
        self._source_options = {**(source_options or {}),
                                "scan": None if scan is None else tuple(scan), "order": order}
        self._end_grace, self._start_timeout = end_grace, start_timeout
        self._launcher: Launcher = launcher or ProcessLauncher(mp_context)
        self.merge_host, self._heartbeat_timeout = merge_host, float(heartbeat_timeout)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._identities: dict[int, bytes] = {}
        self._hellos: dict[int, dict[str, Any]] = {}
        self._byes: set[int] = set()
        self._worker_status: dict[int, dict[str, Any]] = {}
        self._errors: list[str] = []
        self._series: Series | None = None
        self._accs: dict[str, Accumulator] = {}
        self._ended_by: set[int] = set()
        self._end_sent = False
        self._duplicates = self._late = self._processed = 0
        self._latest: np.ndarray | None = None
        self._final: xr.Dataset | None = None
        self._finished_ids: list[int] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._collector_done = threading.Event()
        self._ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ParallelRun:
        """Start the merging thread and the receivers; wait until all are up.

        Raises
        ------
        RuntimeError
            A receiver failed to start (e.g. cannot connect the endpoint) or did not answer
            within ``start_timeout``.
        """
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._collect, name="framescope-merge",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        config = {"endpoint": self.endpoint, "protocol": self.protocol,
                  "source": self._source_options, "control": self._ctrl_endpoint,
                  "data": self._data_endpoint, "end_grace": self._end_grace,
                  "heartbeat_timeout": self._heartbeat_timeout}
        kind = self._launcher.kind
        try:
            self._launcher.launch([{**config, "worker": k} for k in range(self.processes)],
                                  self.udfs)
        except BaseException:
            self.stop()
            raise
        deadline = time.monotonic() + self._start_timeout
        failed: list[str] = []
        with self._cond:
            while len(self._identities) < self.processes and not self._errors:
                failed = self._launcher.failed()
                if time.monotonic() > deadline or failed:
                    break
                self._cond.wait(0.1)
            started = len(self._identities)
        if started < self.processes:
            why = "; ".join(self._errors or failed) or f"no answer in {self._start_timeout:g} s"
            self.stop()
            raise RuntimeError(f"{self.processes} receivers ({kind}) for {self.endpoint}: "
                               f"only {started} started ({why})")
        return self

    def stop(self) -> None:
        """Stop the receivers (they send what they analysed) and the merging."""
        if self._thread is None:
            return
        self._commands.put({"cmd": "stop"})
        self._launcher.join(30)
        with self._cond:  # their last partials may still be on the way
            self._cond.wait_for(lambda: self._byes >= set(self._identities), _BYE_TIMEOUT)
        self._stopping.set()
        self._thread.join()
        self._thread = None
        with self._cond:
            if self._series is not None and self._final is None:
                self._final = self._publish("stopped")
                self._cond.notify_all()

    def __enter__(self) -> ParallelRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what users read -------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """Counters summed over the receiver processes, gaps and state from the merge."""
        with self._lock:
            return self._status()

    def _status(self) -> Status:
        series = self._series
        sid = None if series is None else series.series
        sts = [s for s in self._worker_status.values() if s["status"]["series"] == sid]
        summed = {k: sum(s["status"][k] for s in sts) for k in _SUMMED}
        summed["frames_processed"] = self._processed  # counted here: statuses lag
        summed["duplicates"] += self._duplicates
        summed["malformed"] += self._late
        state = "idle"
        if self._final is not None:
            state = self._final.attrs["state"]
        elif self._end_sent:
            state = "draining"
        elif series is not None:
            states = {s["status"]["state"] for s in sts}
            state = "receiving" if "receiving" in states else (
                "stalled" if "stalled" in states else "receiving")
        unique = sum(s["unique"] for s in sts)
        top = (series.n_frames if self._end_sent or self._final is not None
               else max((s["highest"] for s in sts), default=-1) + 1)
        errors = [s["status"]["last_error"] for s in sts if s["status"]["last_error"]]
        return Status(
            state=state, series=None if series is None else series.series,
            frames_expected=None if series is None else series.n_frames,
            gaps=max(0, top - unique) if series is not None else 0,
            latency_s=max((s["status"]["latency_s"] for s in sts), default=0.0),
            latency_max_s=max((s["status"]["latency_max_s"] for s in sts), default=0.0),
            policy=self.policy, last_error=(self._errors or errors or [""])[-1], **summed)

    def snapshot(self) -> xr.Dataset:
        """Merged results so far, with ``done`` and the status in attrs (thread-safe)."""
        with self._lock:
            if self._series is None:
                return xr.Dataset(attrs=self._status().as_dict())
            return publish(self._accs, self._series, self._status().as_dict())

    def _publish(self, state: str) -> xr.Dataset:
        attrs = {**self._status().as_dict(), "state": state}
        return publish(self._accs, self._series, attrs)

    def wait(self, timeout: float | None = None) -> xr.Dataset | None:
        """Final results of the current (or next) series, or None after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._final is None:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or self._collector_done.is_set():
                    return self._final
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            return self._final

    @property
    def results(self) -> xr.Dataset | None:
        """Final results of the last finished series."""
        return self._final

    def latest_frame(self) -> np.ndarray | None:
        """The most recent frame any receiver reported (a few Hz)."""
        frame = self._latest
        return None if frame is None else frame.copy()

    @property
    def launcher(self) -> Launcher:
        """Where the receivers run (e.g. a ``DaskLauncher``'s ``futures``)."""
        return self._launcher

    @property
    def receivers(self) -> list[dict[str, Any]]:
        """Where each receiver runs and what it received of the current series.

        One dict per receiver: ``worker`` (index), ``host``, ``pid``, ``where`` (the dask
        worker's address, or None for a process) and ``frames_received``.
        """
        with self._lock:
            return [{**self._hellos[k], "frames_received":
                     self._worker_status.get(k, {}).get("status", {}).get("frames_received", 0)}
                    for k in sorted(self._hellos)]

    # -- merging thread --------------------------------------------------------------------

    def _collect(self) -> None:
        zctx = zmq.Context.instance()
        ctrl, data = zctx.socket(zmq.ROUTER), zctx.socket(zmq.PULL)
        for sock in (ctrl, data):
            sock.setsockopt(zmq.LINGER, 0)
        ctrl.bind(f"tcp://{self.merge_host}:0")
        data.bind(f"tcp://{self.merge_host}:0")
        self._ctrl_endpoint = ctrl.getsockopt_string(zmq.LAST_ENDPOINT)
        self._data_endpoint = data.getsockopt_string(zmq.LAST_ENDPOINT)
        self._ready.set()
        poller = zmq.Poller()
        poller.register(ctrl, zmq.POLLIN)
        poller.register(data, zmq.POLLIN)
        ping = json.dumps({"cmd": "ping"}).encode()
        next_ping = 0.0
        try:
            while True:
                events = dict(poller.poll(20))
                try:
                    if data in events:
                        self._on_data(data.recv_multipart(copy=False))
                    if ctrl in events:
                        identity, *parts = ctrl.recv_multipart(copy=False)
                        self._on_control(identity.bytes, parts)
                except Exception as exc:  # one bad merge must not end the run silently
                    log.exception("merging partial results failed")
                    self._errors.append(f"merge: {type(exc).__name__}: {exc}")
                while not self._commands.empty():
                    cmd = json.dumps(self._commands.get()).encode()
                    for ident in self._identities.values():
                        ctrl.send_multipart([ident, cmd])
                if time.monotonic() >= next_ping:  # receivers stop when these cease
                    for ident in self._identities.values():
                        ctrl.send_multipart([ident, ping])
                    next_ping = time.monotonic() + HEARTBEAT_EVERY
                if self._stopping.is_set() and not events:
                    break  # receivers are gone and their sockets drained
        finally:
            ctrl.close()
            data.close()
            self._collector_done.set()

    def _on_control(self, identity: bytes, parts: list[Any]) -> None:
        try:
            head, arrays = decode_message(parts)
        except MessageError:
            log.exception("bad message from a receiver")
            return
        kind, worker = head.get("kind"), head.get("worker")
        with self._cond:
            if kind == "hello":
                self._identities[worker] = identity
                self._hellos[worker] = {k: head.get(k) for k in ("worker", "host", "pid",
                                                                 "where")}
            elif kind == "status":
                self._set_status(head)
                if arrays:
                    self._latest = arrays[0][2].copy()
            elif kind == "error":
                self._errors.append(f"worker {worker}: {head.get('error')}")
            elif kind == "end":
                self._worker_end(worker, head["series"], head["ended"])
            self._cond.notify_all()

    def _on_data(self, parts: list[Any]) -> None:
        try:
            head, arrays = decode_message(parts)
        except MessageError:
            log.exception("bad message from a receiver")
            return
        kind, series = head.get("kind"), head.get("series")
        with self._cond:
            if kind == "bye":
                self._byes.add(head.get("worker"))
                self._cond.notify_all()
            elif kind == "start":
                self._begin(head)
            elif self._series is None or series != self._series.series:
                self._late += kind == "partial"
                log.warning("partial results of series %s after it was closed: ignored",
                            series)
            elif kind == "partial":
                part = partial_of(arrays)
                acc = self._accs[head["udf"]]
                if head["udf"] == next(iter(self._accs)):
                    self._duplicates += int(acc.done[part.positions].sum())
                    self._processed += len(part.positions)
                acc.add(part)
            elif kind == "end":
                self._set_status(head)
                self._worker_end(head["worker"], series, head["ended"])

    def _set_status(self, head: dict[str, Any]) -> None:
        """Keep a worker's newest status (heads come on two sockets, so out of order)."""
        old = self._worker_status.get(head["worker"])
        if old is None or head["seq"] > old["seq"]:
            self._worker_status[head["worker"]] = head

    def _begin(self, head: dict[str, Any]) -> None:
        sid = head["series"]
        if (self._series is not None and self._series.series == sid) \
                or sid in self._finished_ids:
            return
        if self._series is not None and self._final is None:
            self._final = self._publish("stopped")  # superseded before its end
        meta = Meta(tuple(head["scan_shape"]), tuple(head["frame_shape"]),
                    np.dtype(head["dtype"]))
        self._series = Series(sid, meta, head["order"], head["n_frames"], head["header"])
        self._accs = {k: Accumulator(u, meta) for k, u in self.udfs.items()}
        self._ended_by, self._end_sent, self._final = set(), False, None
        self._duplicates = self._late = self._processed = 0

    def _worker_end(self, worker: int, series: int, ended: bool) -> None:
        if self._series is None or series != self._series.series or self._final is not None:
            return
        self._ended_by.add(worker)
        if ended and not self._end_sent:
            self._end_sent = True  # the others finish after a quiet grace period
            self._commands.put({"cmd": "end", "series": series})
        if len(self._ended_by) >= self.processes:
            self._final = self._publish("finished" if self._end_sent else "stopped")
            self._finished_ids.append(series)
            self._cond.notify_all()
