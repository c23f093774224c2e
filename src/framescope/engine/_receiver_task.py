"""One receiver of a parallel stream job (a child process or a task on a dask worker).

It runs a :class:`~framescope.live.ZMQSource` and the same :class:`Analysis` thread as an
in-process job; only the sink differs: before analysing a batch it *claims* the batch's
scan positions from the merging process (so a frame delivered to two receivers is analysed
once, by whoever claims it first), and it sends its partial results there instead of
merging them. Control, claims and status travel on DEALER sockets, results on a PUSH
socket, all to the merging process's ``merge_host`` (127.0.0.1 by default) and without
pickle (JSON heads + raw arrays). The merging side pings every ``HEARTBEAT_EVERY`` s; a
receiver that hears nothing for ``heartbeat_timeout`` s stops on its own, so none outlives
the job that started it (on a dask worker nothing else would end it).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import time
from typing import Any

import numpy as np
import zmq

from framescope.engine._group import named_udfs, task_udf
from framescope.engine._stream import Analysis
from framescope.engine._tasks import Partial
from framescope.engine._wire import encode_message, encode_partial
from framescope.live import End, Series, Status, ZMQSource

__all__ = ["HEARTBEAT_EVERY", "HEARTBEAT_TIMEOUT", "receiver_main"]

log = logging.getLogger(__name__)

STATUS_EVERY = 0.2  # s between status messages (with the latest frame)
HEARTBEAT_EVERY = 1.0  # s between pings of the merging side
HEARTBEAT_TIMEOUT = 5.0  # s without any control message after which a receiver stops
CLAIM_TIMEOUT_MS = 5000  # the merging side answers claims between merges: milliseconds

_SEQ = itertools.count()  # orders status heads sent on two sockets (next() is atomic)


class _Forward:
    """The sink of a receiver: claims positions, sends partials to the merging process.

    Its sockets are made and used by the analysis thread only (ZeroMQ sockets are not
    thread-safe); :meth:`close` runs after that thread has ended.
    """

    def __init__(self, config: dict[str, Any], zctx: zmq.Context) -> None:
        self.config, self.worker, self.zctx = config, config["worker"], zctx
        self.head: Any = None  # set by receiver_main: the status head of the end message
        self.seen: set[int] = set()  # series begun here (read by the control loop)
        self._push: zmq.Socket | None = None
        self._claim: zmq.Socket | None = None

    def _send(self, parts: list[Any]) -> None:
        if self._push is None:
            self._push = self.zctx.socket(zmq.PUSH)
            self._push.connect(self.config["data"])
        self._push.send_multipart(parts, copy=False)

    def begin(self, series: Series) -> None:
        self.seen.add(series.series)
        m = series.meta
        # the header's arrays (pixel mask, flat field) only from the receiver that saw it
        self._send(encode_message({
            "kind": "start", "worker": self.worker, "series": series.series,
            "scan_shape": m.scan_shape, "frame_shape": m.frame_shape, "dtype": m.dtype.str,
            "order": series.order, "n_frames": series.n_frames, "header": series.header,
            "calibration": None if m.calibration is None else m.calibration.to_json()},
            [("array", name, a) for name, a in series.arrays.items()]))

    def admit(self, series: Series, positions: np.ndarray) -> np.ndarray | None:
        if self._claim is None:
            self._claim = self.zctx.socket(zmq.DEALER)
            self._claim.setsockopt(zmq.LINGER, 0)
            self._claim.connect(self.config["control"])
        self._claim.send_multipart(encode_message(
            {"kind": "claim", "worker": self.worker, "series": series.series,
             "n": series.n_frames}, [("positions", "", positions)]), copy=False)
        if not self._claim.poll(CLAIM_TIMEOUT_MS):
            # the merging side is gone or stuck: analyse; the heartbeat ends this receiver
            log.warning("receiver %d: no answer to a claim in %d ms", self.worker,
                        CLAIM_TIMEOUT_MS)
            self._claim.close(linger=0)
            self._claim = None
            return None
        reply = self._claim.recv()
        return np.frombuffer(reply, dtype=bool)

    def add(self, series: Series, part: Partial) -> None:
        self._send(encode_partial({"worker": self.worker, "series": series.series}, part))

    def complete(self, series: Series, end: End, state: str, status: Status) -> None:
        # final counters ride along: status messages may lag behind the last partials
        self._send(encode_message({**self.head(status), "kind": "end",
                                   "series": end.series, "ended": end.ended}))

    def close(self) -> None:
        # "bye" comes after the last partial on the same ordered socket: once the merging
        # side has it, nothing of this receiver is still in flight
        self._send(encode_message({"kind": "bye", "worker": self.worker}))
        self._push.close(linger=10_000)  # let the last partials leave
        if self._claim is not None:
            self._claim.close(linger=0)


def _where(config: dict[str, Any]) -> dict[str, Any]:
    return {"worker": config["worker"], "pid": os.getpid(), "host": socket.gethostname(),
            "where": config.get("where")}


def receiver_main(config: dict[str, Any], udfs: dict[str, Any]) -> dict[str, Any]:
    """Run one receiver until told to stop or the merging side is gone.

    ``config`` comes from the merging side: ``endpoint``, ``protocol``, ``source``
    (ZMQSource options), ``control``/``data`` (merging side), ``worker`` (index),
    ``end_grace``, ``heartbeat_timeout``, ``kernel_threads``; ``configure_logging`` (own
    process only, never in a dask worker, whose logging belongs to it), ``log_level`` and
    ``watch_parent`` (stop when the parent process is gone), ``where`` (a dask worker's
    address, for reports).

    Returns
    -------
    dict
        ``worker``, ``pid``, ``host``, ``where`` and ``frames_received``; and ``error``
        when the receiver could not start (the merging side has been told) or the merging
        side never answered its hello.
    """
    worker, grace = config["worker"], config["end_grace"]
    if config.get("configure_logging", False):
        logging.basicConfig(level=config.get("log_level", logging.WARNING),
                            format=f"%(levelname)s worker {worker} %(name)s: %(message)s")
    timeout = float(config.get("heartbeat_timeout", HEARTBEAT_TIMEOUT))
    # an own context: terminating it at the end waits until the last partials and "bye"
    # have left (a child process ends with os._exit, which would drop them; a dask
    # worker's shared context must not be terminated)
    zctx = zmq.Context()
    ctrl = zctx.socket(zmq.DEALER)
    ctrl.setsockopt(zmq.LINGER, 2000)
    ctrl.connect(config["control"])
    source = ZMQSource(config["endpoint"], config["protocol"], **config["source"])
    named = named_udfs(udfs)
    udf = task_udf(named)
    sink = _Forward(config, zctx)
    analysis = Analysis(source, udf, sink, kernel_threads=config.get("kernel_threads", 1),
                        corrections=config.get("corrections"))

    def head(status: Status | None = None) -> dict[str, Any]:
        unique, highest = source.frame_progress()
        return {"kind": "status", "worker": worker, "seq": next(_SEQ),
                "status": (status or analysis.status()).as_dict(), "unique": unique,
                "highest": highest}

    def status_message() -> list[Any]:
        frame = source.latest_frame()
        return encode_message(head(), [] if frame is None else [("latest", "", frame)])

    sink.head = head
    try:
        analysis.start()
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        ctrl.send_multipart(encode_message({"kind": "error", "worker": worker, "error": why}))
        ctrl.close()
        zctx.term()
        log.debug("receiver %d could not start", worker, exc_info=True)
        return {**_where(config), "frames_received": 0,
                "error": f"receiver {worker} for {config['endpoint']}: {why}"}
    ctrl.send_multipart(encode_message({**_where(config), "kind": "hello"}))
    parent = os.getppid() if config.get("watch_parent", False) else None
    next_status = 0.0
    heard, last = False, time.monotonic()
    pending: dict[int, float] = {}  # series the merging side ended -> grace, not settled yet
    try:
        while True:
            if ctrl.poll(50):
                cmd = json.loads(ctrl.recv())
                heard, last = True, time.monotonic()
                if cmd.get("cmd") == "stop":
                    break
                if cmd.get("cmd") == "end":
                    pending[cmd["series"]] = float(cmd.get("grace", grace))
            for series, series_grace in list(pending.items()):
                if _end(series, series_grace, source, ctrl, worker, sink.seen):
                    del pending[series]
            now = time.monotonic()
            if now >= next_status:
                ctrl.send_multipart(status_message(), copy=False)
                next_status = now + STATUS_EVERY
            if now - last > timeout:
                log.warning("receiver %d: no message from the merging side at %s for %.0f s;"
                            " stopping", worker, config["control"], now - last)
                break
            if parent is not None and os.getppid() != parent:
                log.warning("merging process gone; stopping")
                break
    finally:
        analysis.stop()
        sink.close()  # the analysis thread has ended: its sockets are ours now
        ctrl.send_multipart(status_message(), copy=False)
        ctrl.close()
        zctx.term()  # waits (up to the sockets' linger) until everything has left
    summary = {**_where(config), "frames_received": source.status.frames_received}
    if not heard:
        summary["error"] = (
            f"receiver {worker}: the merging side at {config['control']} never answered "
            f"(within {timeout:g} s); receivers on another host need merge_host= set to an "
            "address of the merging machine that they can reach")
    return summary


def _end(series: int, grace: float, source: ZMQSource, ctrl: zmq.Socket, worker: int,
         seen: set[int]) -> bool:
    """The merging side says ``series`` ended (its end message went to another receiver).

    Returns True once settled. A series not begun here is answered "empty" only after the
    socket has been quiet for ``grace``: its header and frames may still wait unread in the
    socket (a receiver that was busy when the series started).
    """
    s = source.series
    if s is not None and s.series == series:
        if source.series_open:  # frames may still be in flight: end once quiet
            source.request_end(series, grace)
        return True
    if series in seen or source.seen(series):
        # received here and moved past: this receiver ended it itself after its last
        # partials, on the ordered data socket
        return True
    if source.quiet_for() < grace:
        return False
    ctrl.send_multipart(encode_message({"kind": "end", "worker": worker,
                                        "series": series, "ended": True, "empty": True}))
    return True
