"""A stream job on several receivers that PULL from one detector PUSH socket, merged here.

PUSH deals messages round-robin, so each receiver sees a share of the frames, and only one
sees a series' header or end. Every receiver therefore needs the scan shape up front (frames
carry their own shape and dtype); the receiver that gets the end reports it, and this
process tells the others to finish the series once their socket has been quiet for
``end_grace`` s. Partial results merge into the same :class:`Merge` as an in-process job.

Faults: a receiver claims a batch's positions here before analysing it, so a frame that
reached two receivers is analysed once (sums stay exact); a receiver that ends, or is not
heard from for ``lost_after`` s, is *lost*: the status names it, the others go on, the
positions it claimed but never delivered stay not done (``status.lost``), and the series
ends once the others have been quiet for ``lost_grace`` s.

Where the receivers run is a :class:`~framescope.engine._launchers.Launcher`: child
processes (the default) or long-running tasks on dask workers
(:class:`~framescope.engine._dask_receivers.DaskLauncher`); the merging is the same.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from typing import Any

import numpy as np
import zmq

from framescope.engine._claims import Claims
from framescope.engine._job import Results
from framescope.engine._launchers import Launcher, ProcessLauncher
from framescope.engine._receiver_status import SeriesState, merged_status
from framescope.engine._receiver_task import HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT
from framescope.engine._stream_merge import Merge
from framescope.engine._wire import calibration_of, decode_message, partial_of
from framescope.live import MessageError, Series, Status
from framescope.udf._base import UDF, Meta

__all__ = ["ReceiversRunner"]

log = logging.getLogger(__name__)

_WILDCARDS = ("*", "0.0.0.0", "::", "")
_BYE_TIMEOUT = 10.0  # s to wait, at stop, for receivers' last partials
_CHECK_EVERY = 0.25  # s between looks for lost receivers
_PENDING_MAX_S = 5.0  # s the next series' messages wait for the current one to complete


class ReceiversRunner:
    """A stream job analysed in ``processes`` receivers sharing one PUSH stream.

    Parameters
    ----------
    endpoint, protocol : str
        The detector's stream.
    named, udfs, task_udf
        The job's UDFs by name, as given, and what each batch runs.
    processes : int
    scan : (int, int)
        The scan shape (only one receiver sees the series header).
    source_options : dict
        :class:`~framescope.live.ZMQSource` options of every receiver.
    launcher : Launcher, optional
        Where the receivers run; default :class:`ProcessLauncher` with ``mp_context``.
    merge_host : str
        Interface the merging sockets bind, and the address receivers connect to: the
        default 127.0.0.1 serves receivers on this machine; receivers on other hosts need
        an address of this machine that they reach (not a wildcard). The sockets then accept
        connections from the network; they carry JSON heads and raw arrays only.
    heartbeat_timeout : float
        Seconds without a message from here after which a receiver stops on its own.
    lost_after : float
        Seconds without a message from a receiver after which it counts as lost.
    lost_grace : float
        After a receiver was lost mid-series, the others end the series once their socket
        has been quiet this long (its end message may have gone to the lost one).
    """

    def __init__(self, endpoint: str, protocol: str, named: dict[str, UDF], udfs: Any,
                 task_udf: UDF, *, processes: int = 2, scan: tuple[int, int] | None,
                 order: str | None = None, source_options: dict[str, Any] | None = None,
                 end_grace: float = 0.25, mp_context: str | mp.context.BaseContext = "spawn",
                 launcher: Launcher | None = None, merge_host: str = "127.0.0.1",
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT, lost_after: float = 5.0,
                 lost_grace: float = 2.0, start_timeout: float = 120.0,
                 kernel_threads: int = 1, on_series_end: Any = None,
                 corrections: Any = None) -> None:
        if processes < 1:
            raise ValueError(f"processes: expected >= 1, found {processes}")
        if scan is None and processes > 1:
            raise ValueError("several receivers need scan=(ny, nx) on the source: only one "
                             "of them receives the series header")
        if merge_host.strip("[]") in _WILDCARDS:
            raise ValueError(f"merge_host: expected an address of this machine that the "
                             f"receivers can connect to, found the wildcard {merge_host!r}")
        if not heartbeat_timeout > HEARTBEAT_EVERY:
            raise ValueError(f"heartbeat_timeout: expected more than {HEARTBEAT_EVERY} s "
                             f"(the ping interval), found {heartbeat_timeout!r}")
        self.endpoint, self.protocol, self.processes = endpoint, protocol, processes
        self.named = named
        # the header (and its pixel mask) reaches one receiver: the detector's corrections
        # are not taken from it here (all receivers must correct alike); give them instead
        corrections = False if corrections is None else corrections
        self.merge = Merge(named, udfs, task_udf, on_series_end, corrections)
        self._corrections = corrections
        self.policy = (source_options or {}).get("policy", "drop")
        self._source_options = {**(source_options or {}),
                                "scan": None if scan is None else tuple(scan), "order": order}
        if launcher is None and self._source_options.get("decode_threads") is None:
            # receivers on this machine share its cores: decoding threads too
            self._source_options["decode_threads"] = max(1, (os.cpu_count() or 1) // processes)
        self._end_grace, self._start_timeout = end_grace, start_timeout
        self._kernel_threads = kernel_threads
        self._launcher: Launcher = launcher or ProcessLauncher(mp_context)
        self.merge_host, self._heartbeat_timeout = merge_host, float(heartbeat_timeout)
        self._lost_after, self._lost_grace = float(lost_after), float(lost_grace)
        self._lock = self.merge.lock
        self._cond = self.merge.finished
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._identities: dict[int, bytes] = {}
        self._hellos: dict[int, dict[str, Any]] = {}
        self._heard: dict[int, float] = {}
        self._lost: dict[int, str] = {}
        self._byes: set[int] = set()
        self._worker_status: dict[int, dict[str, Any]] = {}
        self._errors: list[str] = []
        self._claims = Claims()
        self._pending: list[tuple[dict[str, Any], list[Any]]] = []
        self._pending_since = 0.0
        self._s = SeriesState()
        self._latest: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._collector_done = threading.Event()
        self._ready = threading.Event()
        self._bind_error: zmq.ZMQError | None = None
        self._cancelled = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ReceiversRunner:
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
        if self._bind_error is not None:
            self._thread.join()
            self._thread = None
            raise ValueError(f"merge_host={self.merge_host!r}: the merging sockets cannot "
                             f"bind there ({self._bind_error}); expected an address of this "
                             "machine") from self._bind_error
        config = {"endpoint": self.endpoint, "protocol": self.protocol,
                  "source": self._source_options, "control": self._ctrl_endpoint,
                  "data": self._data_endpoint, "end_grace": self._end_grace,
                  "heartbeat_timeout": self._heartbeat_timeout,
                  "corrections": self._corrections,
                  "kernel_threads": self._kernel_threads}
        kind = self._launcher.kind
        try:
            self._launcher.launch([{**config, "worker": k} for k in range(self.processes)],
                                  self.named)
        except BaseException:
            self.cancel()
            raise
        deadline = time.monotonic() + self._start_timeout
        failed: dict[int, str] = {}
        with self._cond:
            while len(self._identities) < self.processes and not self._errors:
                failed = self._launcher.failed()
                if time.monotonic() > deadline or failed:
                    break
                self._cond.wait(0.1)
            started = len(self._identities)
        if started < self.processes:
            why = "; ".join(self._errors or list(failed.values())) \
                or f"no answer in {self._start_timeout:g} s"
            self.cancel()
            raise RuntimeError(f"{self.processes} receivers ({kind}) for {self.endpoint}: "
                               f"only {started} started ({why})")
        return self

    def cancel(self) -> None:
        """Stop the receivers (they send what they analysed) and the merging."""
        self._cancelled = True
        if self._thread is None:
            return
        self._commands.put({"cmd": "stop"})
        self._launcher.join(30, set(self._lost))
        with self._cond:  # their last partials may still be on the way
            self._cond.wait_for(
                lambda: self._byes | set(self._lost) >= set(self._identities), _BYE_TIMEOUT)
        self._stopping.set()
        self._thread.join()
        self._thread = None
        with self._cond:
            self.merge.close(dataclasses.replace(self._status(), state="stopped"),
                             self.endpoint)

    # -- what users read -------------------------------------------------------------------

    def status(self) -> Status:
        """Counters summed over the receivers, gaps, lost frames and state from the merge."""
        with self._lock:
            return self._status()

    def _status(self) -> Status:
        return merged_status(self._worker_status.values(), self.merge, self._s,
                             lost=self._lost_frames(), receivers_lost=len(self._lost),
                             policy=self.policy, errors=self._errors)

    def _lost_frames(self) -> int:
        """Positions claimed for analysis but never merged: held by a lost receiver."""
        series = self.merge.series
        if not self._lost or series is None:
            return 0
        return self._claims.unmerged(series.series, next(iter(self.merge.accs.values())).done)

    def partial(self) -> Results | None:
        with self._lock:
            return self.merge.publish(self._status(), self.endpoint)

    def wait(self, timeout: float | None, series: int | None = None) -> Results | None:
        return self.merge.wait(timeout, lambda: not self._collector_done.is_set(), series)

    def finished(self) -> bool:
        return self._cancelled or self._collector_done.is_set()

    @property
    def results(self) -> Results | None:
        return self.merge.last

    def latest_frame(self) -> np.ndarray | None:
        """The most recent frame any receiver reported (a few Hz)."""
        frame = self._latest
        return None if frame is None else frame.copy()

    @property
    def udfs(self) -> dict[str, UDF]:
        return dict(self.merge.named)

    @property
    def launcher(self) -> Launcher:
        """Where the receivers run (e.g. a ``DaskLauncher``'s ``futures``)."""
        return self._launcher

    @property
    def receivers(self) -> list[dict[str, Any]]:
        """Where each receiver runs and what it received of the current series.

        One dict per receiver: ``worker`` (index), ``host``, ``pid``, ``where`` (the dask
        worker's address, or None for a process), ``frames_received`` and ``lost`` (why,
        or "").
        """
        with self._lock:
            return [{**self._hellos[k], "lost": self._lost.get(k, ""), "frames_received":
                     self._worker_status.get(k, {}).get("status", {}).get("frames_received", 0)}
                    for k in sorted(self._hellos)]

    # -- merging thread --------------------------------------------------------------------

    def _collect(self) -> None:
        zctx = zmq.Context.instance()
        ctrl, data = zctx.socket(zmq.ROUTER), zctx.socket(zmq.PULL)
        for sock in (ctrl, data):
            sock.setsockopt(zmq.LINGER, 0)
        try:
            ctrl.bind(f"tcp://{self.merge_host}:0")
            data.bind(f"tcp://{self.merge_host}:0")
        except zmq.ZMQError as exc:  # e.g. merge_host is not an address of this machine
            self._bind_error = exc
            ctrl.close()
            data.close()
            self._collector_done.set()
            self._ready.set()
            return
        self._ctrl_endpoint = ctrl.getsockopt_string(zmq.LAST_ENDPOINT)
        self._data_endpoint = data.getsockopt_string(zmq.LAST_ENDPOINT)
        self._ready.set()
        poller = zmq.Poller()
        poller.register(ctrl, zmq.POLLIN)
        poller.register(data, zmq.POLLIN)
        ping = json.dumps({"cmd": "ping"}).encode()
        next_ping = next_check = 0.0
        try:
            while True:
                events = dict(poller.poll(20))
                try:
                    if ctrl in events:  # claims first: a receiver waits on each
                        for _ in range(64):
                            identity, *parts = ctrl.recv_multipart(copy=False)
                            self._on_control(ctrl, identity.bytes, parts)
                            if not ctrl.poll(0):
                                break
                    if data in events:
                        self._on_data(data.recv_multipart(copy=False))
                except Exception as exc:  # one bad merge must not end the run silently
                    log.exception("merging partial results failed")
                    self._errors.append(f"merge: {type(exc).__name__}: {exc}")
                while not self._commands.empty():
                    cmd = json.dumps(self._commands.get()).encode()
                    for ident in self._identities.values():
                        ctrl.send_multipart([ident, cmd])
                now = time.monotonic()
                if now >= next_ping:  # receivers stop when these cease
                    for ident in self._identities.values():
                        ctrl.send_multipart([ident, ping])
                    next_ping = now + HEARTBEAT_EVERY
                # messages still queued mean this side fell behind (a loaded machine), not
                # that a receiver went silent: read them before judging anyone lost
                if (now >= next_check and not self._stopping.is_set()
                        and not ctrl.poll(0)):
                    self._check_lost(now)
                    next_check = now + _CHECK_EVERY
                if self._stopping.is_set() and not events:
                    break  # receivers are gone and their sockets drained
        finally:
            ctrl.close()
            data.close()
            self._collector_done.set()

    def _check_lost(self, now: float) -> None:
        """Receivers that ended (launcher) or went silent are lost; the rest go on."""
        if self._cancelled:
            return
        failed = self._launcher.failed()
        with self._cond:
            if self._pending and now - self._pending_since > _PENDING_MAX_S:
                self._drain_pending(force=True)
            for k in self._identities:
                if k in self._lost or k in self._byes:
                    continue
                if k in failed:
                    why = failed[k]
                elif now - self._heard.get(k, now) > self._lost_after:
                    why = f"no message for {now - self._heard[k]:.1f} s"
                else:
                    continue
                self._receiver_lost(k, why)

    def _receiver_lost(self, worker: int, why: str) -> None:
        where = self._hellos.get(worker, {})
        place = where.get("where") or f"pid {where.get('pid')} on {where.get('host')}"
        msg = f"receiver {worker} ({self._launcher.kind}, {place}) lost: {why}"
        log.warning("%s; going on with the others", msg)
        self._lost[worker] = why
        self._errors.append(msg)
        series = self.merge.series
        if series is not None and self.merge.final is None:
            if not self._s.end_sent:
                # its share of the stream, and maybe the series' end message, went with it:
                # the others end the series once their socket has been quiet for a while
                self._commands.put({"cmd": "end", "series": series.series,
                                    "grace": self._lost_grace})
            self._worker_end(worker, series.series, False)
        self._cond.notify_all()

    def _on_control(self, ctrl: zmq.Socket, identity: bytes, parts: list[Any]) -> None:
        try:
            head, arrays = decode_message(parts)
        except MessageError:
            log.exception("bad message from a receiver")
            return
        kind, worker = head.get("kind"), head.get("worker")
        if kind == "claim":
            granted = self._claims.grant(head["series"], int(head["n"]), arrays[0][2])
            ctrl.send_multipart([identity, granted.tobytes()])
            return
        with self._cond:
            self._heard[worker] = time.monotonic()
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
        with self._cond:
            self._heard[head.get("worker")] = time.monotonic()
            self._handle(head, arrays)

    def _handle(self, head: dict[str, Any], arrays: list[Any]) -> None:
        kind, sid = head.get("kind"), head.get("series")
        merge = self.merge
        if kind == "bye":
            self._byes.add(head.get("worker"))
            self._cond.notify_all()
            return
        current = merge.series
        if (kind in ("start", "partial", "end") and current is not None
                and merge.final is None and sid != current.series
                and sid not in merge.finished_ids):
            # a receiver on the next series while others still send this one (each
            # receiver's own messages come in order): kept until this one completes
            self._pending.append((head, arrays))
            if len(self._pending) == 1:
                self._pending_since = time.monotonic()
            return
        if kind == "start":
            self._begin(head, {k: a.copy() for g, k, a in arrays if g == "array"})
        elif merge.series is None or sid != merge.series.series \
                or merge.final is not None:
            self._s.late += kind == "partial"
            if kind == "partial":
                log.warning("partial results of series %s after it was closed: ignored",
                            sid)
        elif kind == "partial":
            part = partial_of(arrays)
            self._s.processed += len(part.positions)
            merge.add(merge.series, part)
        elif kind == "end":
            self._set_status(head)
            self._worker_end(head["worker"], sid, head["ended"])

    def _drain_pending(self, force: bool = False) -> None:
        """Handle the next series' messages kept while this one completed (``force``: a
        series that did not complete in time is closed as stopped first)."""
        if not self._pending:
            return
        if force:
            log.warning("series %s: not every receiver ended it within %.0f s of the next "
                        "series' start; closing it", self.merge.series.series,
                        _PENDING_MAX_S)
            self.merge.close(dataclasses.replace(self._status(), state="stopped"),
                             self.endpoint)
        pending, self._pending = self._pending, []
        for head, arrays in pending:
            self._handle(head, arrays)

    def _set_status(self, head: dict[str, Any]) -> None:
        """Keep a worker's newest status (heads come on two sockets, so out of order)."""
        old = self._worker_status.get(head["worker"])
        if old is None or head["seq"] > old["seq"]:
            self._worker_status[head["worker"]] = head

    def _begin(self, head: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        sid = head["series"]
        merge = self.merge
        cal = calibration_of(head)
        if merge.series is not None and merge.series.series == sid:
            merge.add_header(head["header"], arrays, cal)
            return
        if sid in merge.finished_ids:
            return
        # a series superseded before its end
        merge.close(dataclasses.replace(self._status(), state="stopped"), self.endpoint)
        meta = Meta(tuple(head["scan_shape"]), tuple(head["frame_shape"]),
                    np.dtype(head["dtype"]), calibration=cal)
        series = Series(sid, meta, head["order"], head["n_frames"], head["header"],
                        arrays=arrays)
        merge.begin(series)
        self._s = SeriesState(ended_by={k for k in self._lost})

    def _worker_end(self, worker: int, sid: int, ended: bool) -> None:
        merge, s = self.merge, self._s
        if merge.series is None or sid != merge.series.series or merge.final is not None:
            return
        s.ended_by.add(worker)
        if ended and not s.end_sent:
            s.end_sent = True  # the others finish after a quiet grace period
            self._commands.put({"cmd": "end", "series": sid})
        if len(s.ended_by | set(self._lost)) >= self.processes:
            state = "finished" if s.end_sent else "stopped"
            merge.complete(merge.series, dataclasses.replace(self._status(), state=state),
                           self.endpoint)
            self._drain_pending()
