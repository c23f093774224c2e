"""A receiver process of a :class:`~framescope.live.ParallelRun`.

It runs a :class:`ZMQSource` and the live analysis like a single-process run, but sends
its partial results (and series start/end) to the merging process instead of merging them,
and its status a few times per second. Control and status travel on a DEALER socket, data
on a PUSH socket, both to 127.0.0.1 and without pickle (JSON heads + raw arrays).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
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
            if self._push is not None:
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


def worker_main(config: dict[str, Any], udfs: Any) -> None:
    """Entry point of a receiver process (``config`` from :class:`ParallelRun`)."""
    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format=f"%(levelname)s worker {config['worker']} %(name)s: %(message)s")
    worker, grace = config["worker"], config["end_grace"]
    ctrl = zmq.Context.instance().socket(zmq.DEALER)
    ctrl.setsockopt(zmq.LINGER, 2000)
    ctrl.connect(config["control"])
    source = ZMQSource(config["endpoint"], config["protocol"], **config["source"])
    run = _ForwardingRun(source, udfs, config["data"], worker)
    try:
        run.start()
    except Exception as exc:
        ctrl.send_multipart(encode_message({"kind": "error", "worker": worker,
                                            "error": f"{type(exc).__name__}: {exc}"}))
        ctrl.close()
        return
    ctrl.send_multipart(encode_message({"kind": "hello", "worker": worker}))
    parent = os.getppid()
    next_status = 0.0
    try:
        while True:
            if ctrl.poll(50):
                cmd = json.loads(ctrl.recv())
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
            if os.getppid() != parent:
                log.warning("merging process gone; stopping")
                break
    finally:
        run.stop()
        ctrl.send_multipart(_status_message(worker, run, source), copy=False)
        ctrl.close()
