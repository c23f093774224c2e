"""A three-stream simulator for events: a detector, an I0 counter and motor positions, each on
its own ZeroMQ PUSH socket, from its own thread, at its own rate, with faults on demand.

Streams (names fixed; frame numbers count 0, 1, ... n-1 on every stream):

- ``"detector"``: ``n_points * frames_per_point`` frames (``detector_protocol``); frame ``k``
  belongs to motor point ``k // frames_per_point``;
- ``"i0"``: one ``{"i0": float}`` per detector frame (``values-json``), frame ``k`` with
  detector frame ``k``;
- ``"motors"``: one ``{"x": float, "y": float}`` per point (``values-cbor``): scattered
  positions in µm, not a grid.

Every stream is one series (id ``series``): a start message, its frames, an end message.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from framescope.live._messages import SeriesStart
from framescope.live._protocols import make_encoder
from framescope.live._values import make_values_encoder

__all__ = ["STREAMS", "SimulatedStreams", "StreamFaults", "StreamsProcess", "simulate_streams",
           "simulate_streams_process"]

log = logging.getLogger(__name__)

STREAMS = ("detector", "i0", "motors")
I0_FIELDS = {"i0": {"dtype": "float64", "shape": [], "unit": "counts"}}
MOTOR_FIELDS = {"x": {"dtype": "float64", "shape": [], "unit": "um"},
                "y": {"dtype": "float64", "shape": [], "unit": "um"}}


@dataclass(frozen=True, slots=True)
class StreamFaults:
    """What goes wrong on one stream.

    Parameters
    ----------
    start_delay : float
        Seconds between the receiver connecting and the start message.
    stop_after : int, optional
        Frame messages sent (repeats count) before the sender goes silent, without an end
        message (a sender dying mid-scan).
    skip : frozenset of int
        Frame numbers never sent.
    repeat : frozenset of int
        Frame numbers sent twice in a row (the same message).
    n_frames : int, optional
        Frames this stream has (sends and announces), instead of the default: streams of
        disagreeing lengths.
    """

    start_delay: float = 0.0
    stop_after: int | None = None
    skip: frozenset[int] = frozenset()
    repeat: frozenset[int] = frozenset()
    n_frames: int | None = None

    @classmethod
    def of(cls, value: StreamFaults | Mapping[str, Any] | None, stream: str) -> StreamFaults:
        """``value`` as StreamFaults; a mapping's keys must be the field names."""
        if value is None:
            return cls()
        if isinstance(value, StreamFaults):
            return value
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"faults[{stream!r}]: unknown keys {unknown}; expected some of "
                             f"{sorted(names)}")
        kw = dict(value)
        for key in ("skip", "repeat"):
            if key in kw:
                kw[key] = frozenset(int(k) for k in kw[key])
        return cls(**kw)

    def plan(self, n: int) -> tuple[list[int], bool]:
        """Frame numbers in the order sent, and whether the end message follows them."""
        order: list[int] = []
        for k in range(n):
            if k not in self.skip:
                order.extend((k, k) if k in self.repeat else (k,))
        if self.stop_after is not None and self.stop_after < len(order):
            return order[: self.stop_after], False
        return order, True


class _Sender:
    """A bound PUSH socket whose waits (for a receiver, for room) end when ``stop`` is set.

    (:class:`framescope.live.Publisher` waits for receivers uninterruptibly and encodes
    what it sends; this one sends parts as given, so replay uses it too.)
    """

    def __init__(self, endpoint: str, *, peers: int = 1, peer_timeout: float = 30.0,
                 sndhwm: int | None = None) -> None:
        self.peers, self.peer_timeout = peers, peer_timeout
        self._ctx = zmq.Context()  # own context: term() waits for queued zero-copy parts
        self._sock = self._ctx.socket(zmq.PUSH)
        if sndhwm is not None:
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._sock.bind(endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._connected = 0

    def wait_for_peers(self, stop: threading.Event) -> bool:
        """Until ``peers`` receivers connected (True), the timeout or ``stop`` (False)."""
        deadline = time.monotonic() + self.peer_timeout
        while self._connected < self.peers:
            left = deadline - time.monotonic()
            if stop.is_set():
                return False
            if left <= 0:
                log.warning("%d of %d receivers connected to %s after %.0f s; sending anyway",
                            self._connected, self.peers, self.endpoint, self.peer_timeout)
                return True
            if (self._monitor.poll(int(min(left, 0.1) * 1000) + 1)
                    and recv_monitor_message(self._monitor)["event"]
                    == zmq.EVENT_HANDSHAKE_SUCCEEDED):
                self._connected += 1
        return True

    def send(self, parts: list[Any], stop: threading.Event) -> bool:
        """Send one message (zero-copy; keep its buffers alive); False if stopped first."""
        while not self._sock.poll(100, zmq.POLLOUT):  # full or no receiver: PUSH would block
            if stop.is_set():
                return False
        self._sock.send_multipart(parts, copy=False)
        return True

    def close(self, linger_s: float) -> None:
        """Close, giving queued messages ``linger_s`` to leave."""
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=int(linger_s * 1000))
        self._ctx.term()


def pace(t0: float, at: float, stop: threading.Event) -> None:
    """Sleep until ``perf_counter() == t0 + at`` (in >= 1 ms steps; ``stop`` wakes it)."""
    ahead = t0 + at - time.perf_counter()
    if ahead > 0.001:
        stop.wait(ahead)


def run_sender(sender: _Sender, messages: Iterable[tuple[float, list[Any]]],
               stop: threading.Event, *, delay: float = 0.0, linger_s: float = 10.0,
               on_start: Callable[[], float] | None = None) -> int:
    """Send ``(time offset s, parts)`` messages, paced from the moment the receivers are
    there (plus ``delay``, or from ``on_start()``'s perf_counter time); messages sent."""
    sent = 0
    try:
        if not sender.wait_for_peers(stop):
            return 0
        if delay > 0:
            stop.wait(delay)
        t0 = on_start() if on_start is not None else time.perf_counter()
        for at, parts in messages:
            if stop.is_set():
                break
            pace(t0, at, stop)
            if not sender.send(parts, stop):
                break
            sent += 1
    finally:
        sender.close(0.0 if stop.is_set() else linger_s)
    return sent


@dataclass
class SimulatedStreams:
    """Handle of :func:`simulate_streams` (and of replays, without ``truth``).

    Attributes
    ----------
    endpoints, protocols : dict of str to str
        Stream name → bound endpoint, protocol name.
    truth : dict of str to dict of int to value
        What each stream sends, by frame number: detector frames (arrays), ``i0`` floats,
        motor ``{"x", "y"}`` dicts. Skipped frames and frames after ``stop_after`` are
        absent; a repeated frame appears once.
    sent : dict of str to list of int
        Frame numbers in the order they are sent (repeats twice).
    ended : dict of str to bool
        Whether the stream sends its end message.
    """

    endpoints: dict[str, str]
    protocols: dict[str, str]
    truth: dict[str, dict[int, Any]] = field(default_factory=dict)
    sent: dict[str, list[int]] = field(default_factory=dict)
    ended: dict[str, bool] = field(default_factory=dict)
    messages_sent: dict[str, int] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _errors: list[BaseException] = field(default_factory=list, repr=False)

    def _spawn(self, name: str, sender: _Sender, messages: Iterable[tuple[float, list[Any]]],
               **kw: Any) -> None:
        def target() -> None:
            try:
                self.messages_sent[name] = run_sender(sender, messages, self._stop, **kw)
            except BaseException as exc:  # handed to wait(), the caller's thread
                log.exception("stream %r: sending failed", name)
                self._errors.append(exc)

        thread = threading.Thread(target=target, name=f"framescope-send-{name}", daemon=True)
        self._threads.append(thread)

    def _start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stream sent all it sends; False if ``timeout`` passed first.

        Raises
        ------
        RuntimeError
            A sender thread failed (the cause is chained).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._errors:
            raise RuntimeError(f"a stream sender failed: {self._errors[0]!r}") from self._errors[0]
        return not any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending (between messages; no end messages) and close the sockets."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)


def _detector_frames(frames: Any, n: int, det: tuple[int, int], dtype: str, seed: int,
                     ) -> np.ndarray:
    if frames is None:
        from framescope.datasets import synthetic

        return np.asarray(synthetic(scan=(1, n), det=det, dtype=dtype, seed=seed)).reshape(
            n, *det)
    arr = np.ascontiguousarray(frames)
    if arr.ndim != 3 or arr.shape[0] < n:
        raise ValueError(f"frames: expected (n >= {n}, height, width) detector frames, found "
                         f"shape {arr.shape}")
    return arr


@contextlib.contextmanager
def simulate_streams(
    frames: np.ndarray | None = None,
    *,
    n_points: int = 16,
    frames_per_point: int = 1,
    det: tuple[int, int] = (32, 32),
    dtype: str = "uint16",
    detector_protocol: str = "dectris-stream2",
    compression: str = "none",
    rates: Mapping[str, float] | None = None,
    faults: Mapping[str, StreamFaults | Mapping[str, Any]] | None = None,
    series: int = 1,
    seed: int = 0,
    peers: int = 1,
    peer_timeout: float = 30.0,
    host: str = "127.0.0.1",
) -> Iterator[SimulatedStreams]:
    """Publish a detector, an I0 and a motor stream, each from its own thread.

    Frame numbers run 0..n-1 on every stream (see the module docstring for how the
    streams line up). Each socket binds ``tcp://{host}:0`` (a free port, see
    ``.endpoints``) and sends once ``peers`` receivers connected to it.

    Parameters
    ----------
    frames : numpy.ndarray, optional
        ``(n, height, width)`` detector frames (the first ``n_points * frames_per_point``
        are sent); default :func:`framescope.datasets.synthetic` with ``det``, ``dtype``.
    n_points, frames_per_point : int
        Motor points, and detector (and I0) frames per point.
    detector_protocol : {"dectris-stream2", "native", "dectris-stream1"}
    compression : {"none", "lz4", "bslz4"}
        Of the detector frames.
    rates : mapping of stream name to float, optional
        Messages per second per stream; 0 or missing = as fast as the receiver takes them.
    faults : mapping of stream name to StreamFaults or dict, optional
        Per stream, see :class:`StreamFaults`.
    series : int
        Series id of every stream.
    seed : int
        Of the I0 values, motor positions and synthetic frames.
    peers, peer_timeout
        Receivers to wait for per stream, and for how long (s).

    Yields
    ------
    SimulatedStreams
        ``.endpoints``, ``.protocols``, ``.truth``, ``.sent``, ``.ended``, ``.wait()``,
        ``.stop()``. Leaving the block stops what is still sending: ``wait()`` first.

    Examples
    --------
    >>> with simulate_streams(n_points=4, faults={"i0": {"skip": [2]}}) as sim:
    ...     pull.connect(sim.endpoints["i0"])  # doctest: +SKIP
    """
    rates = dict(rates or {})
    unknown = sorted(set(rates) - set(STREAMS)) + sorted(set(faults or {}) - set(STREAMS))
    if unknown:
        raise ValueError(f"rates/faults: unknown streams {unknown}; expected {list(STREAMS)}")
    fault = {name: StreamFaults.of((faults or {}).get(name), name) for name in STREAMS}
    default_n = {"detector": n_points * frames_per_point, "i0": n_points * frames_per_point,
                 "motors": n_points}
    n = {name: fault[name].n_frames if fault[name].n_frames is not None else default_n[name]
         for name in STREAMS}
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {
        "detector": _detector_frames(frames, n["detector"], det, dtype, seed),
        "i0": rng.normal(1e5, 1e3, n["i0"]),
        "motors": rng.uniform(-5.0, 5.0, (n["motors"], 2)),  # scattered, µm
    }
    protocols = {"detector": detector_protocol, "i0": "values-json", "motors": "values-cbor"}
    senders: dict[str, _Sender] = {}
    try:
        for name in STREAMS:
            senders[name] = _Sender(f"tcp://{host}:0", peers=peers, peer_timeout=peer_timeout)
    except BaseException:
        for s in senders.values():
            s.close(0.0)
        raise
    sim = SimulatedStreams({k: s.endpoint for k, s in senders.items()}, protocols)
    for name in STREAMS:
        order, ended = fault[name].plan(n[name])
        sim.sent[name], sim.ended[name] = order, ended
        if name == "detector":
            sim.truth[name] = {k: data[name][k] for k in order}
        elif name == "i0":
            sim.truth[name] = {k: float(data[name][k]) for k in order}
        else:
            sim.truth[name] = {k: {"x": float(data[name][k, 0]), "y": float(data[name][k, 1])}
                               for k in order}
        messages = _messages(name, protocols[name], compression, series, n[name], order, ended,
                             sim.truth[name], data["detector"], rates.get(name, 0.0))
        sim._spawn(name, senders[name], messages, delay=fault[name].start_delay)
    sim._start()
    try:
        yield sim
    finally:
        sim.stop()


def _messages(name: str, protocol: str, compression: str, series: int, n: int,
              order: list[int], ended: bool, truth: Mapping[int, Any], frames: np.ndarray,
              rate: float) -> Iterator[tuple[float, list[Any]]]:
    """(time offset, parts) of one stream, encoded as they are sent."""
    step = 1.0 / rate if rate > 0 else 0.0
    if name == "detector":
        enc = make_encoder(protocol, compression)
        h, w = frames.shape[1:]
        yield 0.0, enc.start(SeriesStart(series, (h, w), frames.dtype, n))
        for i, k in enumerate(order):
            yield i * step, enc.frame(series, k, frames[k])
        if ended:
            yield len(order) * step, enc.end(series)
        return
    venc = make_values_encoder(protocol)
    yield 0.0, venc.start(name, series, I0_FIELDS if name == "i0" else MOTOR_FIELDS, n)
    for i, k in enumerate(order):
        values = {"i0": truth[k]} if name == "i0" else truth[k]
        yield i * step, venc.frame(series, k, values)
    if ended:
        yield len(order) * step, venc.end(series, len(order))


@dataclass
class StreamsProcess:
    """Handle of :func:`simulate_streams_process`: ``endpoints``, ``protocols``, ``sent``,
    ``ended`` as in :class:`SimulatedStreams` (no ``truth``: frames stay in the process)."""

    endpoints: dict[str, str]
    protocols: dict[str, str]
    sent: dict[str, list[int]]
    ended: dict[str, bool]
    _conn: Any = field(repr=False)
    _proc: Any = field(repr=False)
    _done: bool = False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every stream sent all it sends; False if ``timeout`` passed first."""
        if not self._done and self._conn.poll(timeout):
            kind, detail = self._conn.recv()
            if kind == "error":
                raise RuntimeError(f"simulator process failed: {detail}")
            self._done = True
        return self._done

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending and end the process."""
        with contextlib.suppress(OSError, ValueError):  # pipe closed: the process has ended
            self._conn.send("stop")
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)


def _serve(conn: Any, kwargs: dict[str, Any]) -> None:
    """Child process: run the simulator, report endpoints, obey "stop"."""
    try:
        with simulate_streams(**kwargs) as sim:
            conn.send(("ready", (sim.endpoints, sim.protocols, sim.sent, sim.ended)))
            while not sim.wait(0.05):
                if conn.poll() and conn.recv() == "stop":
                    return
            conn.send(("done", sim.messages_sent))
    except BaseException as exc:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", repr(exc)))
    finally:
        conn.close()


@contextlib.contextmanager
def simulate_streams_process(*, start_timeout: float = 60.0, **kwargs: Any,
                             ) -> Iterator[StreamsProcess]:
    """:func:`simulate_streams` in its own process (spawned), for benchmarks: the senders'
    encoding and pacing then do not share the receiving process' GIL.

    ``kwargs`` are those of :func:`simulate_streams` (plain values and arrays: they are
    pickled to the process). Yields a :class:`StreamsProcess`.

    Raises
    ------
    RuntimeError
        The process failed to start the simulator (the error's repr is given), or did
        not report within ``start_timeout`` s.
    """
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, kwargs), daemon=True,
                       name="framescope-simulate-streams")
    proc.start()
    child.close()
    try:
        if not conn.poll(start_timeout):
            raise RuntimeError(f"simulator process did not start within {start_timeout} s")
        kind, detail = conn.recv()
        if kind != "ready":
            raise RuntimeError(f"simulator process failed: {detail}")
        handle = StreamsProcess(*detail, _conn=conn, _proc=proc)
        yield handle
    finally:
        if proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                conn.send("stop")
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        conn.close()
