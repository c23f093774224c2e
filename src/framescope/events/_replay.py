"""Record several ZeroMQ streams together, raw, and replay them; or publish HDF5 datasets as
streams.

A recording holds every multipart message of every stream as its bytes came, with its
receive time, so any protocol (detector or values, valid or not) replays byte for byte.
Layout (HDF5, one group per stream)::

    /                           attrs: framescope_streams_recording = 1, streams (JSON list)
    /streams/<name>/data            uint8: all parts of all messages, concatenated
    /streams/<name>/part_lengths    int64: bytes of each part, in order
    /streams/<name>/message_offsets int64: index of each message's first part
    /streams/<name>/times           float64: receive time of each message, s since the epoch
    /streams/<name>                 attrs: protocol ("" if not given), endpoint, messages,
                                    ended (an end message was seen)

No pickle anywhere; replays open the file read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from framescope.events._record import BLOCK, DATASETS, MARK, StreamsRecorder, record_streams
from framescope.events._simulate import SimulatedStreams, _Sender
from framescope.live._messages import SeriesStart
from framescope.live._protocols import PROTOCOLS, make_encoder
from framescope.live._values import VALUE_PROTOCOLS, make_values_encoder

__all__ = ["ReplayedStreams", "StreamsRecorder", "record_streams", "replay_hdf5",
           "replay_streams"]  # recording: framescope.events._record



def _open(path: str | os.PathLike[str]) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{os.fspath(path)}: no such file")
    return h5py.File(p, "r")


def _recorded_streams(f: h5py.File, path: Any) -> dict[str, str]:
    """Stream name → protocol of a recording, every group checked."""
    if f.attrs.get(MARK) != 1:
        hint = (" (a single-stream recording: replay it with framescope.live.replay)"
                if "framescope_recording" in f.attrs else "")
        raise ValueError(f"{os.fspath(path)}: not a framescope streams recording: expected root "
                         f"attribute {MARK!r} = 1, found attributes {sorted(f.attrs)}{hint}")
    out = {}
    for name in json.loads(f.attrs.get("streams", "[]")):
        group = f.get(f"streams/{name}")
        missing = [d for d in DATASETS if group is None or d not in group]
        if missing:
            raise ValueError(f"{os.fspath(path)}: stream {name!r}: expected group "
                             f"/streams/{name} with datasets {list(DATASETS)}, missing "
                             f"{missing}")
        out[name] = str(group.attrs.get("protocol", ""))
    return out


def _recorded_messages(path: Any, name: str, t_ref: float, speed: float,
                       ) -> Iterator[tuple[float, list[Any]]]:
    """(time offset, parts) of one recorded stream, the data read in blocks."""
    with h5py.File(path, "r") as f:
        g = f[f"streams/{name}"]
        lengths = g["part_lengths"][:]
        offsets = g["message_offsets"][:]
        times = g["times"][:]
        data = g["data"]
        ends = np.concatenate([[0], np.cumsum(lengths)])  # byte offset of each part
        first_parts = np.append(offsets, len(lengths))
        buf, buf_start = np.empty(0, np.uint8), 0
        for i in range(len(offsets)):
            p0, p1 = first_parts[i], first_parts[i + 1]
            b0, b1 = int(ends[p0]), int(ends[p1])
            if b1 > buf_start + len(buf) or b0 < buf_start:
                buf_start = b0
                buf = data[b0 : max(b1, min(b0 + BLOCK, data.shape[0]))]
            view = memoryview(buf)
            parts = [view[int(ends[p]) - buf_start : int(ends[p + 1]) - buf_start]
                     for p in range(p0, p1)]
            at = (times[i] - t_ref) / speed if speed > 0 else 0.0
            yield at, parts


class ReplayedStreams(SimulatedStreams, Mapping[str, str]):
    """Stream name → endpoint (a mapping), with ``protocols``, ``messages_sent``,
    ``wait()`` and ``stop()`` as :class:`~framescope.events._simulate.SimulatedStreams`."""

    _barrier: threading.Barrier | None = None  # streams start together (see _together)

    def __getitem__(self, name: str) -> str:
        return self.endpoints[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.endpoints)

    def __len__(self) -> int:
        return len(self.endpoints)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending (streams still waiting to start together too) and close."""
        if self._barrier is not None:
            self._barrier.abort()  # streams still waiting to start together
        super().stop(timeout)


def _bind_all(names: list[str], endpoints: Mapping[str, str] | None, peers: int,
              peer_timeout: float) -> dict[str, _Sender]:
    unknown = sorted(set(endpoints or {}) - set(names))
    if unknown:
        raise ValueError(f"endpoints: unknown streams {unknown}; expected some of {names}")
    senders: dict[str, _Sender] = {}
    try:
        for name in names:
            senders[name] = _Sender((endpoints or {}).get(name, "tcp://127.0.0.1:0"),
                                    peers=peers, peer_timeout=peer_timeout)
    except BaseException:
        for s in senders.values():
            s.close(0.0)
        raise
    return senders


def _together(handle: ReplayedStreams, n: int) -> Any:
    """An ``on_start`` for n senders: all start at one perf_counter time, once every
    stream's receivers are there (or the wait was aborted: then at once)."""
    t0: list[float] = []
    barrier = threading.Barrier(n, action=lambda: t0.append(time.perf_counter()))
    handle._barrier = barrier

    def on_start() -> float:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return t0[0] if t0 else time.perf_counter()

    return on_start


@contextlib.contextmanager
def replay_streams(
    path: str | os.PathLike[str],
    *,
    speed: float = 1.0,
    endpoints: Mapping[str, str] | None = None,
    peers: int = 1,
    peer_timeout: float = 30.0,
) -> Iterator[ReplayedStreams]:
    """Publish every recorded stream's messages, byte for byte, each from its own thread.

    Parameters
    ----------
    path : str or PathLike
        A recording of :func:`record_streams`.
    speed : float
        1 replays with the recorded timing (across streams too), 2 twice as fast, 0 as
        fast as the receivers take the messages.
    endpoints : mapping of str to str, optional
        Where to bind each stream; default ``tcp://127.0.0.1:0`` (a free port).
    peers, peer_timeout
        Receivers to wait for per stream (all streams start together once each has
        them), and for how long (s).

    Yields
    ------
    ReplayedStreams
        Stream name → bound endpoint; ``.protocols``, ``.wait()``, ``.stop()``. Leaving
        the block stops what is still sending.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a streams recording (the root attribute expected is named), a stream group
        without its datasets, a negative speed.
    """
    if speed < 0:
        raise ValueError(f"speed: expected >= 0 (0 = as fast as possible), found {speed}")
    with _open(path) as f:
        protocols = _recorded_streams(f, path)
        starts = [float(f[f"streams/{n}/times"][0]) for n in protocols
                  if f[f"streams/{n}/times"].shape[0]]
    if not protocols:
        raise ValueError(f"{os.fspath(path)}: the recording holds no streams")
    t_ref = min(starts, default=0.0)
    senders = _bind_all(list(protocols), endpoints, peers, peer_timeout)
    handle = ReplayedStreams({n: s.endpoint for n, s in senders.items()}, protocols)
    on_start = _together(handle, len(senders))
    for name, sender in senders.items():
        handle._spawn(name, sender, _recorded_messages(path, name, t_ref, speed),
                      on_start=on_start)
    handle._start()
    try:
        yield handle
    finally:
        handle.stop()


def _hdf5_messages(path: Any, name: str, spec: Mapping[str, Any], series: int,
                   compression: str) -> Iterator[tuple[float, list[Any]]]:
    """(time offset, parts) of one dataset published as a stream."""
    rate = float(spec.get("rate", 0.0))
    step = 1.0 / rate if rate > 0 else 0.0
    protocol = spec["protocol"]
    with h5py.File(path, "r") as f:
        ds = f[spec["dataset"]]
        n = ds.shape[0]
        rows = max(1, BLOCK // max(1, ds.dtype.itemsize * int(np.prod(ds.shape[1:]))))
        if ds.ndim == 3:
            enc = make_encoder(protocol, compression)
            yield 0.0, enc.start(SeriesStart(series, ds.shape[1:], ds.dtype.newbyteorder("="),
                                             n, header={"source": spec["dataset"]}))
            encode = enc.frame
        else:
            venc = make_values_encoder(protocol)
            yield 0.0, venc.start(name, series, _fields_of(ds), n)

            def encode(series: int, k: int, row: Any) -> list[Any]:
                if ds.dtype.names:
                    return venc.frame(series, k, {f: row[f] for f in ds.dtype.names})
                return venc.frame(series, k, {ds.name.rsplit("/", 1)[-1]: row})

        for k0 in range(0, n, rows):
            block = ds[k0 : k0 + rows]
            for j, row in enumerate(block):
                yield (k0 + j) * step, encode(series, k0 + j, row)
        if ds.ndim == 3:
            yield n * step, enc.end(series)
        else:
            yield n * step, venc.end(series, n)


def _fields_of(ds: h5py.Dataset) -> dict[str, dict[str, Any]]:
    unit = ds.attrs.get("units", ds.attrs.get("unit", ""))
    unit = unit.decode() if isinstance(unit, bytes) else str(unit)
    if ds.dtype.names:
        return {f: {"dtype": ds.dtype[f].base.name, "shape": list(ds.dtype[f].shape),
                    "unit": unit} for f in ds.dtype.names}
    return {ds.name.rsplit("/", 1)[-1]: {"dtype": ds.dtype.name, "shape": list(ds.shape[1:]),
                                         "unit": unit}}


def _check_hdf5_spec(f: h5py.File, path: Any, name: str, spec: Any) -> None:
    where = f"{os.fspath(path)}: stream {name!r}"
    if not isinstance(spec, Mapping) or "dataset" not in spec or "protocol" not in spec:
        raise ValueError(f"{where}: expected a mapping with 'dataset', 'protocol' and "
                         f"optionally 'rate', found {spec!r}")
    unknown = sorted(set(spec) - {"dataset", "protocol", "rate"})
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected dataset, protocol, rate")
    ds = f.get(spec["dataset"])
    if not isinstance(ds, h5py.Dataset):
        raise KeyError(f"{where}: no dataset {spec['dataset']!r} in the file"
                       + (" (it is a group)" if ds is not None else ""))
    protocol = spec["protocol"]
    if ds.ndim == 3:
        if protocol not in PROTOCOLS:
            raise ValueError(f"{where}: dataset {spec['dataset']!r} has 3 dims (frames): "
                             f"expected a detector protocol {sorted(PROTOCOLS)}, found "
                             f"{protocol!r}")
    elif ds.ndim in (1, 2) and not (ds.dtype.names and ds.ndim == 2):
        if protocol not in VALUE_PROTOCOLS:
            raise ValueError(f"{where}: dataset {spec['dataset']!r} has {ds.ndim} dim(s) "
                             f"(values): expected a values protocol {list(VALUE_PROTOCOLS)}, "
                             f"found {protocol!r}")
        kinds = [ds.dtype[f].base.kind for f in ds.dtype.names] if ds.dtype.names else [
            ds.dtype.kind]
        if any(k not in "biuf" for k in kinds):
            raise ValueError(f"{where}: dataset {spec['dataset']!r}: expected numeric values, "
                             f"found dtype {ds.dtype}")
    else:
        raise ValueError(f"{where}: dataset {spec['dataset']!r}: expected 3 dims (frames) or "
                         f"1-2 dims (values; compound: 1 dim), found shape {ds.shape}")


@contextlib.contextmanager
def replay_hdf5(
    path: str | os.PathLike[str],
    streams: Mapping[str, Mapping[str, Any]],
    *,
    series: int = 1,
    compression: str = "none",
    endpoints: Mapping[str, str] | None = None,
    peers: int = 1,
    peer_timeout: float = 30.0,
) -> Iterator[ReplayedStreams]:
    """Publish HDF5 datasets as streams, one dataset per stream, frame ``k`` = row ``k``.

    Parameters
    ----------
    path : str or PathLike
    streams : mapping of str to mapping
        Stream name → ``{"dataset": "/entry/data", "protocol": ..., "rate": Hz}`` (rate 0
        or missing: as fast as the receiver takes them). A 3D dataset ``(n, h, w)`` is a
        detector stream (a detector protocol: ``"dectris-stream2"``, ``"native"``, …); a
        1D or 2D one a values stream (``"values-json"``/``"values-cbor"``) with one field
        named as the dataset's basename (a scalar, or a row of the 2D dataset), or, for a
        1D compound dataset, one field per compound field. The dataset's ``units`` attr
        becomes the fields' unit.
    series : int
        Series id of every stream.
    compression : {"none", "lz4", "bslz4"}
        Of detector frames.
    endpoints, peers, peer_timeout
        As for :func:`replay_streams` (all streams start together).

    Yields
    ------
    ReplayedStreams

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    KeyError
        A dataset not in the file (file, stream and dataset named).
    ValueError
        A bad stream spec, or a dataset shape that does not fit its protocol.
    """
    if not streams:
        raise ValueError("replay_hdf5: streams: expected at least one stream, found none")
    with _open(path) as f:
        for name, spec in streams.items():
            _check_hdf5_spec(f, path, name, spec)
    protocols = {n: s["protocol"] for n, s in streams.items()}
    senders = _bind_all(list(streams), endpoints, peers, peer_timeout)
    handle = ReplayedStreams({n: s.endpoint for n, s in senders.items()}, protocols)
    on_start = _together(handle, len(senders))
    for name, sender in senders.items():
        handle._spawn(name, sender, _hdf5_messages(path, name, streams[name], series,
                                                   compression), on_start=on_start)
    handle._start()
    try:
        yield handle
    finally:
        handle.stop()
