"""Recording several ZeroMQ streams together, raw: as a job receives them
(:class:`StreamsRecorder`) or on sockets of its own (:func:`record_streams`). The layout is
described in :mod:`framescope.events._replay`, which plays recordings back.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import zmq

from framescope.live import make_stream_decoder
from framescope.live._messages import MessageError, SeriesEnd

__all__ = ["BLOCK", "DATASETS", "MARK", "StreamsRecorder", "record_streams"]

MARK = "framescope_streams_recording"
DATASETS = ("data", "part_lengths", "message_offsets", "times")
BLOCK = 4 * 2**20  # bytes read from the file (or buffered before writing) at a time



class _StreamWriter:
    """Appends one stream's messages to its group, in blocks."""

    def __init__(self, group: h5py.Group) -> None:
        self.group = group
        for name, dtype in zip(DATASETS, ("u1", "i8", "i8", "f8"), strict=True):
            group.create_dataset(name, (0,), dtype=dtype, maxshape=(None,),
                                 chunks=(2**20 if name == "data" else 4096,))
        self.parts: list[memoryview] = []
        self.lengths: list[int] = []
        self.offsets: list[int] = []
        self.times: list[float] = []
        self.n_parts = 0
        self.messages = 0
        self.pending = 0

    def add(self, frames: list[zmq.Frame], t: float) -> None:
        self.offsets.append(self.n_parts + len(self.lengths))
        self.times.append(t)
        for f in frames:
            view = f.buffer
            self.parts.append(view)
            self.lengths.append(view.nbytes)
            self.pending += view.nbytes
        self.messages += 1
        if self.pending >= BLOCK:
            self.flush()

    def flush(self) -> None:
        for name, new in (("data", np.frombuffer(b"".join(self.parts), np.uint8)),
                          ("part_lengths", np.asarray(self.lengths, np.int64)),
                          ("message_offsets", np.asarray(self.offsets, np.int64)),
                          ("times", np.asarray(self.times, np.float64))):
            ds = self.group[name]
            n = ds.shape[0]
            ds.resize((n + len(new),))
            ds[n:] = new
        self.n_parts += len(self.lengths)
        self.parts, self.lengths, self.offsets, self.times = [], [], [], []
        self.pending = 0


class StreamsRecorder:
    """Records the messages of several streams as a job receives them, to one file in
    :func:`record_streams`' layout (:func:`replay_streams` plays it back).

    :meth:`add` (the receivers' ``tap``) only queues; one thread writes.

    Parameters
    ----------
    path : str or PathLike
        The HDF5 file to write (replaced).
    protocols : mapping of str to str
        Stream name → protocol.
    """

    def __init__(self, path: str | os.PathLike[str], protocols: Mapping[str, str]) -> None:
        self.path = path
        self.protocols = dict(protocols)
        self._f = h5py.File(path, "w")
        self._f.attrs[MARK] = 1
        self._f.attrs["streams"] = json.dumps(list(self.protocols))
        self._writers = {n: _StreamWriter(self._f.create_group(f"streams/{n}"))
                         for n in self.protocols}
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="framescope-streams-recorder")
        self._thread.start()

    def add(self, name: str, parts: list[Any], t: float) -> None:
        """Queue one message of stream ``name`` (received at ``t``, seconds since 1970)."""
        self._q.put((name, parts, t))

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            self._writers[item[0]].add(item[1], item[2])

    def close(self, ended: Mapping[str, bool] | None = None) -> dict[str, int]:
        """Write what is queued and close the file; messages recorded per stream."""
        self._q.put(None)
        self._thread.join()
        out = {}
        for name, w in self._writers.items():
            w.flush()
            w.group.attrs.update({"protocol": self.protocols[name], "endpoint": "",
                                  "messages": w.messages,
                                  "ended": bool((ended or {}).get(name, False))})
            out[name] = w.messages
        self._f.close()
        return out


def record_streams(
    endpoints: Mapping[str, str],
    path: str | os.PathLike[str],
    *,
    protocols: Mapping[str, str] | None = None,
    duration: float | None = None,
    idle_timeout: float | None = None,
    stop: threading.Event | None = None,
) -> dict[str, dict[str, Any]]:
    """Connect a PULL socket to each stream and record every message, raw, to ``path``.

    Blocks until ``duration`` s passed, every stream sent an end message (needs
    ``protocols``: messages are decoded to see ends; malformed ones are recorded all the
    same), no message came for ``idle_timeout`` s since the last one (a stream that died;
    the wait for the first message is not limited by it), or ``stop`` is set, whichever is
    first.

    Parameters
    ----------
    endpoints : mapping of str to str
        Stream name (an HDF5 group name: no ``/``) → endpoint to connect to.
    path : str or PathLike
        The HDF5 file to write (replaced).
    protocols : mapping of str to str, optional
        Stream name → protocol, stored with the stream and used to see its end.

    Returns
    -------
    dict
        Per stream: ``messages``, ``bytes``, ``ended``, ``malformed`` (messages the
        protocol's decoder rejected; recorded anyway).

    Raises
    ------
    ValueError
        Nothing would end the recording, a bad stream name, or a protocol for no stream.
    """
    protocols = dict(protocols or {})
    if duration is None and idle_timeout is None and stop is None and not (
            protocols and set(protocols) == set(endpoints)):
        raise ValueError("record_streams: give duration=, idle_timeout=, stop=, or protocols= "
                         "for every stream (to stop when all ended)")
    extra = sorted(set(protocols) - set(endpoints))
    bad = [n for n in endpoints if not n or "/" in n or n in (".", "..")]
    if extra or bad:
        raise ValueError(f"record_streams: protocols for unknown streams {extra}" if extra
                         else f"record_streams: stream names should be non-empty without '/', "
                              f"found {bad}")
    decoders = {n: make_stream_decoder(p) for n, p in protocols.items()}
    ctx = zmq.Context.instance()
    socks: dict[zmq.Socket, str] = {}
    ended = dict.fromkeys(endpoints, False)
    malformed = dict.fromkeys(endpoints, 0)
    with h5py.File(path, "w") as f, contextlib.ExitStack() as closing:
        f.attrs[MARK] = 1
        f.attrs["streams"] = json.dumps(list(endpoints))
        writers = {n: _StreamWriter(f.create_group(f"streams/{n}")) for n in endpoints}
        poller = zmq.Poller()
        for name, ep in endpoints.items():
            sock = ctx.socket(zmq.PULL)
            closing.callback(sock.close, linger=0)
            sock.connect(ep)
            poller.register(sock, zmq.POLLIN)
            socks[sock] = name
        t_begin, last = time.monotonic(), None
        while not (stop is not None and stop.is_set()):
            now = time.monotonic()
            if (duration is not None and now - t_begin >= duration) or (
                    idle_timeout is not None and last is not None
                    and now - last >= idle_timeout) or (
                    decoders and all(ended[n] for n in endpoints)):
                break
            for sock, _ in poller.poll(50):
                frames = sock.recv_multipart(copy=False)
                t, name = time.time(), socks[sock]
                last = time.monotonic()
                writers[name].add(frames, t)
                if name in decoders:
                    try:
                        ended[name] |= isinstance(decoders[name].decode(frames), SeriesEnd)
                    except MessageError:
                        malformed[name] += 1
        summary = {}
        for name, w in writers.items():
            w.flush()
            w.group.attrs.update({"protocol": protocols.get(name, ""),
                                  "endpoint": endpoints[name], "messages": w.messages,
                                  "ended": ended[name]})
            summary[name] = {"messages": w.messages, "bytes": int(w.group["data"].shape[0]),
                             "ended": ended[name], "malformed": malformed[name]}
    return summary
