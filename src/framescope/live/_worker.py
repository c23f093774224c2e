"""A receiver of a :class:`~framescope.live.ParallelRun` (a process or a dask task).

It runs a :class:`ZMQSource` and the live analysis like a single-process run, but sends
its partial results (and series start/end) to the merging process instead of merging them,
and its status a few times per second. Control and status travel on a DEALER socket, data
on a PUSH socket, both to the merging process's ``merge_host`` (127.0.0.1 by default) and
without pickle (JSON heads + raw arrays). The merging side pings every
``HEARTBEAT_EVERY`` s; a receiver that hears nothing for ``heartbeat_timeout`` s stops on
its own, so none outlives the run that started it (on a dask worker nothing else would
end it).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import time
from typing import Any

import zmq

from framescope.live._batch import End, Start
from framescope.live._receiver import ZMQSource
from framescope.live._run import LiveRun
from framescope.live._scan import Series
from framescope.live._wire import encode_message, encode_partial

__all__ = ["worker_main"]

log = logging.getLogger(__name__)

STATUS_EVERY = 0.2  # s between status messages (with the latest frame)
HEARTBEAT_EVERY = 1.0  # s between pings of the merging side
HEARTBEAT_TIMEOUT = 5.0  # s without any control message after which a receiver stops


class _ForwardingRun(LiveRun):
    """A LiveRun whose partial results go to the merging process."""

    def __init__(self, source: ZMQSource, udfs: Any, data: str, worker: int) -> None:
        super().__init__(source, udfs)
        self._data_endpoint, self._worker = data, worker
        self._push: zmq.Socket | None = None

    def _send(self, parts: list[Any]) -> None:
        if self._push is None:  # created in the analysis thread, the only one using it
            self._push = zmq.Context.instance().socket(zmq.PUSH)
            self._push.connect(self._data_endpoint)
        self._push.send_multipart(parts, copy=False)

    def _loop(self) -> None:
        try:
            super()._loop()
        finally:
            # "bye" comes after the last partial on the same ordered socket: once the
            # merging side has it, nothing of this receiver is still in flight
            self._send(encode_message({"kind": "bye", "worker": self._worker}))
            self._push.close(linger=10_000)  # let the last partials leave

    def _begin(self, start: Start) -> None:
        super()._begin(start)
        s: Series = start.series
        m = s.meta
        self._send(encode_message({
            "kind": "start", "worker": self._worker, "series": s.series,
            "scan_shape": m.scan_shape, "frame_shape": m.frame_shape, "dtype": m.dtype.str,
            "order": s.order, "n_frames": s.n_frames, "header": s.header}))

    def _merge(self, series: Series, parts: dict[str, Any]) -> None:
        for name, part in parts.items():
            self._send(encode_partial({"worker": self._worker, "series": series.series,
                                       "udf": name}, part))

    def _complete(self, end: End) -> None:
        # final counters ride along: status messages may lag behind the last partials
        self._send(encode_message({**_status_head(self._worker, self, self.source),
                                   "kind": "end", "series": end.series, "ended": end.ended}))


_SEQ = itertools.count()  # orders status heads sent on two sockets (next() is atomic)


def _status_head(worker: int, run: LiveRun, source: ZMQSource) -> dict[str, Any]:
    seq = next(_SEQ)
    unique, highest = source.frame_progress()
    return {"kind": "status", "worker": worker, "status": run.status.as_dict(),
            "unique": unique, "highest": highest, "seq": seq}


def _status_message(worker: int, run: LiveRun, source: ZMQSource) -> list[Any]:
    frame = source.latest_frame()
    return encode_message(_status_head(worker, run, source),
                          [] if frame is None else [("latest", "", frame)])


def _where(config: dict[str, Any]) -> dict[str, Any]:
    return {"worker": config["worker"], "pid": os.getpid(), "host": socket.gethostname(),
            "where": config.get("where")}


def worker_main(config: dict[str, Any], udfs: Any) -> dict[str, Any]:
    """Run one receiver until told to stop or the merging side is gone.

    ``config`` comes from :class:`ParallelRun`: ``endpoint``, ``protocol``, ``source``
    (ZMQSource options), ``control``/``data`` (merging side), ``worker`` (index),
    ``end_grace``, ``heartbeat_timeout``; ``configure_logging`` (own process only, never in
    a dask worker, whose logging belongs to it), ``log_level`` and ``watch_parent`` (stop
    when the parent process is gone), ``where`` (a dask worker's address, for reports).

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
    ctrl = zmq.Context.instance().socket(zmq.DEALER)
    ctrl.setsockopt(zmq.LINGER, 2000)
    ctrl.connect(config["control"])
    source = ZMQSource(config["endpoint"], config["protocol"], **config["source"])
    run = _ForwardingRun(source, udfs, config["data"], worker)
    try:
        run.start()
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        ctrl.send_multipart(encode_message({"kind": "error", "worker": worker, "error": why}))
        ctrl.close()
        log.debug("receiver %d could not start", worker, exc_info=True)
        return {**_where(config), "frames_received": 0,
                "error": f"receiver {worker} for {config['endpoint']}: {why}"}
    ctrl.send_multipart(encode_message({**_where(config), "kind": "hello"}))
    parent = os.getppid() if config.get("watch_parent", False) else None
    next_status = 0.0
    heard, last = False, time.monotonic()
    try:
        while True:
            if ctrl.poll(50):
                cmd = json.loads(ctrl.recv())
                heard, last = True, time.monotonic()
                if cmd.get("cmd") == "stop":
                    break
                if cmd.get("cmd") == "end":
                    series = cmd["series"]
                    s = source.series
                    if s is not None and s.series == series:
                        if source.series_open:  # frames may still be in flight: grace
                            source.request_end(series, grace)
                    else:  # no frame of this series came here
                        ctrl.send_multipart(encode_message({
                            "kind": "end", "worker": worker, "series": series,
                            "ended": True, "empty": True}))
            now = time.monotonic()
            if now >= next_status:
                ctrl.send_multipart(_status_message(worker, run, source), copy=False)
                next_status = now + STATUS_EVERY
            if now - last > timeout:
                log.warning("receiver %d: no message from the merging side at %s for %.0f s;"
                            " stopping", worker, config["control"], now - last)
                break
            if parent is not None and os.getppid() != parent:
                log.warning("merging process gone; stopping")
                break
    finally:
        run.stop()
        ctrl.send_multipart(_status_message(worker, run, source), copy=False)
        ctrl.close()
    summary = {**_where(config), "frames_received": run.status.frames_received}
    if not heard:
        summary["error"] = (
            f"receiver {worker}: the merging side at {config['control']} never answered "
            f"(within {timeout:g} s); receivers on another host need merge_host= set to an "
            "address of the merging machine that they can reach")
    return summary
