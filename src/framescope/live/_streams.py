"""Receivers for the streams of a multi-stream job: one PULL socket and thread per stream.

Each stream has its own protocol (a detector: DECTRIS stream v1/stream2 or native; small
values: ``values-json``/``values-cbor``), rate and frame numbering. A receiver decodes every
message, keeps the counters the single-stream receiver keeps (received, gaps, repeated,
malformed by reason) and hands each frame, with its number, to a sink: the event former of
:mod:`framescope.events`. Detector frames are copied out of the message (the message buffer
is reused by ZeroMQ); value frames are dicts of numbers and small arrays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from framescope.live._messages import Frame, HeaderPart, MessageError, SeriesEnd, SeriesStart
from framescope.live._protocols import make_decoder
from framescope.live._values import VALUE_PROTOCOLS, Values, make_values_decoder

__all__ = ["StreamCounters", "StreamReceiver", "StreamSink", "make_stream_decoder"]

log = logging.getLogger(__name__)


class StreamSink(Protocol):
    """Where a :class:`StreamReceiver` hands on what it received (called from its thread)."""

    def on_start(self, stream: str, start: SeriesStart) -> None: ...

    def on_frame(self, stream: str, index: int, payload: Any, nbytes: int) -> None: ...

    def on_end(self, stream: str, end: SeriesEnd) -> None: ...


@dataclass
class StreamCounters:
    """What one stream's receiver counted (read by other threads: plain ints)."""

    received: int = 0
    repeated: int = 0
    malformed: int = 0
    malformed_by: Counter = field(default_factory=Counter)
    highest: int = -1
    started: bool = False
    ended: bool = False
    series: int | None = None
    n_frames: int | None = None
    last_heard: float = 0.0
    bytes: int = 0
    last_error: str = ""

    @property
    def gaps(self) -> int:
        """Frame numbers below the highest received that have not come (yet)."""
        return max(0, self.highest + 1 - (self.received - self.repeated))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able counters."""
        return {"received": self.received, "gaps": self.gaps, "repeated": self.repeated,
                "malformed": self.malformed, "malformed_by": dict(self.malformed_by),
                "highest": self.highest, "started": self.started, "ended": self.ended,
                "series": self.series, "n_frames": self.n_frames, "bytes": self.bytes,
                "last_error": self.last_error}


def make_stream_decoder(protocol: str) -> Any:
    """A decoder for any stream protocol: detector (:func:`make_decoder`) or small values
    (``values-json``, ``values-cbor``)."""
    return make_values_decoder(protocol) if protocol in VALUE_PROTOCOLS else make_decoder(protocol)


class StreamReceiver:
    """Receive one stream of a multi-stream job on its own thread.

    Parameters
    ----------
    name : str
        The stream's name in the trigger map.
    endpoint : str
        ZeroMQ endpoint the sender binds (``tcp://127.0.0.1:9999``); this side connects.
    protocol : str
        ``dectris-stream1``, ``dectris-stream2``, ``native``, ``values-json``,
        ``values-cbor``.
    sink : StreamSink
        Gets every series start, frame (number and payload) and end.
    context : zmq.Context, optional
    rcvhwm : int
        Messages ZeroMQ queues on this side before the sender blocks.
    tap : callable, optional
        ``tap(name, parts, time)`` gets every message as it came (a recorder), malformed
        ones too; it must not block.
    """

    def __init__(self, name: str, endpoint: str, protocol: str, sink: StreamSink, *,
                 context: Any = None, rcvhwm: int = 10_000,
                 tap: Callable[[str, list[Any], float], None] | None = None) -> None:
        import zmq

        self.name, self.endpoint, self.protocol = name, endpoint, protocol
        self.decoder = make_stream_decoder(protocol)
        self.sink, self.tap = sink, tap
        self.counters = StreamCounters()
        self._seen: set[int] = set()
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"framescope-stream-{name}")

    def start(self) -> StreamReceiver:
        """Connect and start receiving."""
        self._sock.connect(self.endpoint)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop receiving and close the socket."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        sock, c = self._sock, self.counters
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                parts = sock.recv_multipart(copy=False)
                c.last_heard = time.monotonic()
                if self.tap is not None:
                    self.tap(self.name, parts, time.time())
                try:
                    self._handle(self.decoder.decode(parts), parts)
                except MessageError as exc:
                    c.malformed += 1
                    c.malformed_by[exc.reason] += 1
                    c.last_error = f"stream {self.name!r}: {exc}"
                    if c.malformed <= 3 or c.malformed % 1000 == 0:
                        log.warning("%s (%d malformed so far)", c.last_error, c.malformed)
        finally:
            sock.close()

    def _handle(self, msg: Any, parts: list[Any]) -> None:
        c = self.counters
        if isinstance(msg, Frame | Values):
            index = msg.index
            if index in self._seen:  # the first copy counts; a resend is not a new frame
                c.received += 1
                c.repeated += 1
                return
            self._seen.add(index)
            if isinstance(msg, Frame):
                payload, nbytes = np.array(msg.data), msg.data.nbytes
            else:
                payload, nbytes = msg.values, msg.nbytes
            c.received += 1
            c.bytes += nbytes
            if index > c.highest:
                c.highest = index
            self.sink.on_frame(self.name, index, payload, nbytes)
        elif isinstance(msg, SeriesStart):
            if c.started and msg.series != c.series:
                log.info("stream %r: series %s follows series %s", self.name, msg.series,
                         c.series)
            c.started, c.series, c.n_frames = True, msg.series, msg.n_frames
            self.sink.on_start(self.name, msg)
        elif isinstance(msg, SeriesEnd):
            c.ended = True
            self.sink.on_end(self.name, msg)
        elif isinstance(msg, HeaderPart):  # one receiver per stream: its dheader was missed
            raise MessageError(f"stream {self.name!r}: a header part without its dheader",
                               "header part without its dheader")
