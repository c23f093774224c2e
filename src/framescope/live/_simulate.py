"""A detector simulator: PUSH series of frames in any supported protocol, at a set rate.

Frames come from the synthetic dataset, from any file :func:`framescope.open` reads, or from
a recording (:func:`replay`). Like a detector, the simulator binds a PUSH socket; PUSH
blocks (never drops) while no receiver is connected or all are full.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import xarray as xr
import zmq
from zmq.utils.monitor import recv_monitor_message

from framescope.live._calibration import HEADER_KEY
from framescope.live._dark import dark_header
from framescope.live._messages import ScanOrder, SeriesStart
from framescope.live._protocols import make_encoder
from framescope.live._scan import positions_of

__all__ = ["Publisher", "replay", "simulate_stream", "write_stream1_dump"]

log = logging.getLogger(__name__)

_BLOCK_BYTES = 64 * 2**20  # frames read from the source per block


class Publisher:
    """A bound PUSH socket that sends series with one protocol encoder, paced to ``rate``.

    Parameters
    ----------
    endpoint : str
        Where to bind, e.g. ``"tcp://127.0.0.1:9999"`` (port 0: any free port, see
        :attr:`endpoint` after construction).
    protocol, compression
        See :func:`simulate_stream`.
    rate : float
        Frames per second; 0 sends as fast as the receivers take them.
    peers : int
        Wait (up to ``peer_timeout`` s) until this many receivers have connected before
        sending, so several PULL receivers share the series round-robin from its start.
    encoder_options : mapping, optional
        Options of the protocol's encoder (see :func:`simulate_stream`).
    """

    def __init__(self, endpoint: str, protocol: str, *, compression: str = "none",
                 rate: float = 0.0, peers: int = 1, peer_timeout: float = 30.0,
                 sndhwm: int | None = None, linger_s: float = 10.0,
                 encoder_options: Mapping[str, Any] | None = None) -> None:
        self.encoder = make_encoder(protocol, compression, **(encoder_options or {}))
        self.rate = float(rate)
        self.peers, self.peer_timeout, self.linger_s = peers, peer_timeout, linger_s
        # an own context: close() terminates it, which waits (up to linger_s) until queued
        # zero-copy frames left, while their buffers are still alive
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUSH)
        if sndhwm is not None:
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._sock.bind(endpoint)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._connected = 0
        self.frames_sent = 0

    def wait_for_peers(self) -> int:
        """Block until ``peers`` receivers connected or the timeout passed; how many did."""
        deadline = time.monotonic() + self.peer_timeout
        while self._connected < self.peers:
            left = deadline - time.monotonic()
            if left <= 0 or not self._monitor.poll(int(left * 1000)):
                log.warning("only %d of %d receivers connected to %s after %.0f s; sending "
                            "anyway", self._connected, self.peers, self.endpoint,
                            self.peer_timeout)
                break
            if recv_monitor_message(self._monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected += 1
        return self._connected

    def send_series(self, start: SeriesStart, frames: Iterable[tuple[int, np.ndarray]], *,
                    stop_after: int | None = None, stop: threading.Event | None = None,
                    ) -> int:
        """Send a header, ``(frame number, frame)`` pairs and the end; frames sent.

        ``stop_after`` frames, or ``stop`` set, end the series without its end message (a
        sender dying mid-scan).
        """
        enc, sock = self.encoder, self._sock
        sock.send_multipart(enc.start(start))
        t0 = time.perf_counter()
        sent = 0
        for index, frame in frames:
            if (stop_after is not None and sent >= stop_after) or (stop and stop.is_set()):
                return sent
            if self.rate > 0:
                ahead = t0 + sent / self.rate - time.perf_counter()
                if ahead > 0.001:  # sleep in >= 1 ms steps; below, just send
                    time.sleep(ahead)
            sock.send_multipart(enc.frame(start.series, index, frame), copy=False)
            sent += 1
            self.frames_sent += 1
        sock.send_multipart(enc.end(start.series))
        return sent

    def close(self) -> None:
        """Close, giving queued messages ``linger_s`` to leave."""
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=int(self.linger_s * 1000))
        self._ctx.term()


def _frames_of(arr: xr.DataArray | np.ndarray, order: ScanOrder,
               ) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number, frame) in frame-number order, reading blocks of scan rows."""
    ny, nx, h, w = arr.shape
    rows = max(1, _BLOCK_BYTES // max(1, nx * h * w * np.dtype(arr.dtype).itemsize))
    for y0 in range(0, ny, rows):
        block = np.asarray(arr[y0 : y0 + rows].data if isinstance(arr, xr.DataArray)
                           else arr[y0 : y0 + rows])
        flat = np.ascontiguousarray(block).reshape(-1, h, w)
        first = y0 * nx
        indices = np.arange(first, first + len(flat))
        rows_pos = positions_of(indices, (ny, nx), order) - first
        for i, p in zip(indices, rows_pos, strict=True):
            yield int(i), flat[p]


def _source(source: Any, scan: tuple[int, int], det: tuple[int, int], dtype: str,
            ) -> xr.DataArray:
    import framescope

    if source is None:
        from framescope.datasets import synthetic

        return synthetic(scan=scan, det=det, dtype=dtype)
    if isinstance(source, xr.DataArray):
        return source
    return framescope.open(os.fspath(source))


def _dark_frames(dark: Any, det: tuple[int, int], dtype: Any) -> np.ndarray:
    """Dark frames as a ``(scan_y, scan_x, h, w)`` array of the data's dtype."""
    d = np.asarray(dark.data if isinstance(dark, xr.DataArray) else dark)
    if d.ndim == 3:
        d = d[None]
    if d.ndim != 4 or d.shape[2:] != det or d.shape[0] * d.shape[1] == 0:
        raise ValueError(f"dark: expected (n, {det[0]}, {det[1]}) frames, found shape "
                         f"{d.shape}")
    return np.ascontiguousarray(d, dtype=dtype)


def simulate_stream(
    endpoint: str = "tcp://127.0.0.1:9999",
    protocol: str = "dectris-stream2",
    *,
    source: Any = None,
    scan: tuple[int, int] = (128, 128),
    det: tuple[int, int] = (256, 256),
    dtype: str = "uint16",
    rate: float = 5000.0,
    compression: str = "none",
    series: int = 1,
    first_series: int = 1,
    order: ScanOrder = "raster",
    peers: int = 1,
    cache_mib: float = 4096,
    stop_after: int | None = None,
    stop: threading.Event | None = None,
    on_bound: Callable[[str], None] | None = None,
    header_arrays: Mapping[str, np.ndarray] | None = None,
    dark: Any = None,
    mark_dark: bool = True,
    encoder_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish ``series`` scans on a PUSH socket as a detector would.

    Parameters
    ----------
    endpoint : str
        Bind address (default 127.0.0.1 only; port 0 picks a free port, see ``on_bound``).
    protocol : {"dectris-stream2", "dectris-stream1", "native"}
    source : path or DataArray, optional
        Frames to send (anything :func:`framescope.open` reads); default
        :func:`framescope.datasets.synthetic` with ``scan``, ``det`` and ``dtype``.
    rate : float
        Frames per second; 0 = as fast as the receivers take them.
    compression : {"none", "lz4", "bslz4"}
    series : int
        How many series to send (ids ``first_series``, ``first_series + 1``, …).
    order : {"raster", "snake"}
        Scan order announced in the header; frame ``i`` holds the frame of the scan
        position the order assigns to it.
    peers : int
        Receivers to wait for before sending (see :class:`Publisher`).
    cache_mib : float
        Sources up to this size are read (simulated) into memory before sending, so the
        rate holds (synthetic frames are simulated at only ~300-1000 frames/s) and repeated
        series reuse them; larger sources are read block by block while sending.
    stop_after : int, optional
        Stop after this many frames of the first series, without an end message.
    stop : threading.Event, optional
        Set it to stop sending (no end message).
    on_bound : callable, optional
        Called with the bound endpoint before waiting for receivers.
    header_arrays : mapping of str to numpy.ndarray, optional
        Arrays every series header carries, as a detector sends its corrections:
        ``pixel_mask`` and ``flatfield`` (stream v1 then sends ``header_detail: "all"``,
        with ``countrate_table``; stream2 the same map for every channel, with
        ``countrate_correction_lookup_table``; native any name). Names the protocol has
        no place for are not sent (logged).
    dark : array-like, optional
        Dark frames, ``(n, det_y, det_x)`` or ``(scan_y, scan_x, det_y, det_x)`` (a
        DataArray too), sent first as a series of their own (id ``first_series``; the
        data series follow): a detector's dark series. Cast to the frames' dtype.
    mark_dark : bool
        The dark series' header says it is dark (``{"framescope": {"dark": true}}``, see
        docs/live.md); False sends it unmarked, as a receiver that was told to take a dark
        (:meth:`~framescope.live.ZMQSource.take_dark`) would see it.
    encoder_options : mapping, optional
        Options of the protocol's encoder. dectris-stream1
        (:class:`~framescope.live._stream1.Stream1Encoder`): ``md5`` (default True: each
        image's ``hash`` is its blob's MD5, as the documentation has it), ``header_detail``
        (``"none"``, ``"basic"``, ``"all"``; default all with header arrays, else basic),
        ``appendix`` (default True: framescope's extras in the header appendix; False
        for receivers that reject appendices, e.g. LiberTEM-live 0.3), ``image_appendix``.
        dectris-stream2: ``channels``. See docs/live.md, "Protocols".

    Returns
    -------
    dict
        ``endpoint``, ``frames_sent``, ``seconds``, ``rate_hz``, ``series``.

    Examples
    --------
    >>> mask = np.zeros((256, 256), np.uint32)
    >>> mask[10, 20] = 1  # a dead pixel
    >>> simulate_stream("tcp://127.0.0.1:9999", scan=(16, 16),
    ...                 header_arrays={"pixel_mask": mask})  # doctest: +SKIP
    """
    arrays = {k: np.asarray(v) for k, v in (header_arrays or {}).items()}
    arr = _source(source, scan, det, dtype)
    if arr.ndim != 4:
        raise ValueError(f"source: expected (scan_y, scan_x, det_y, det_x) frames, found "
                         f"dims {arr.dims}")
    header: dict[str, Any] = {}
    if "calibration" in arr.attrs:
        # a calibrated dataset replays with its calibration, as a detector sends its geometry
        header[HEADER_KEY] = json.loads(arr.attrs["calibration"])
    if arr.nbytes <= cache_mib * 2**20:
        log.info("reading %d frames (%.0f MiB) into memory before sending", arr.shape[0]
                 * arr.shape[1], arr.nbytes / 2**20)
        arr = np.asarray(arr)  # computed once for all series
    ny, nx, h, w = arr.shape
    darks = None if dark is None else _dark_frames(dark, (h, w), arr.dtype)
    label = ("synthetic" if source is None else "array" if isinstance(source, xr.DataArray)
             else os.fspath(source))
    pub = Publisher(endpoint, protocol, compression=compression, rate=rate, peers=peers,
                    encoder_options=encoder_options)
    try:
        if on_bound is not None:
            on_bound(pub.endpoint)
        pub.wait_for_peers()
        t0 = time.perf_counter()
        if darks is not None:
            dy, dx = darks.shape[:2]
            flags = dark_header() if mark_dark else {}
            pub.send_series(SeriesStart(first_series, (h, w), np.dtype(arr.dtype), dy * dx,
                                        (dy, dx), "raster",
                                        {"source": f"{label} (dark)", **header, **flags},
                                        arrays), _frames_of(darks, "raster"))
            first_series += 1
        for k in range(series):
            start = SeriesStart(first_series + k, (h, w), np.dtype(arr.dtype), ny * nx,
                                (ny, nx), order, {"source": label, **header}, arrays)
            sent = pub.send_series(start, _frames_of(arr, order),
                                   stop_after=stop_after if k == 0 else None, stop=stop)
            if sent < ny * nx:
                break
        seconds = time.perf_counter() - t0
    finally:
        pub.close()
    return {"endpoint": pub.endpoint, "frames_sent": pub.frames_sent, "seconds": seconds,
            "rate_hz": pub.frames_sent / seconds if seconds else 0.0, "series": series}


def replay(
    recording: str | os.PathLike[str],
    endpoint: str = "tcp://127.0.0.1:9999",
    protocol: str = "dectris-stream2",
    *,
    rate: float = 0.0,
    compression: str = "none",
    series: int | None = None,
    peers: int = 1,
    on_bound: Callable[[str], None] | None = None,
    encoder_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-publish a recording (:class:`~framescope.live.Recorder`) series by series.

    Frame numbers, scan shape/order, header fields and header arrays (pixel mask, flat
    field, … as far as ``protocol`` carries them) are those recorded; frames that were
    not recorded are skipped (a receiver sees the same gaps). Parameters as for
    :func:`simulate_stream`; ``series`` picks one recorded series id.
    """
    from framescope.live._record import read_recording

    pub = Publisher(endpoint, protocol, compression=compression, rate=rate, peers=peers,
                    encoder_options=encoder_options)
    n_series = 0
    try:
        if on_bound is not None:
            on_bound(pub.endpoint)
        pub.wait_for_peers()
        t0 = time.perf_counter()
        for start, frames in read_recording(recording, series):
            pub.send_series(start, frames)
            n_series += 1
        seconds = time.perf_counter() - t0
    finally:
        pub.close()
    if n_series == 0:
        raise ValueError(f"{os.fspath(recording)}: no recorded series"
                         + (f" with id {series}" if series is not None else ""))
    return {"endpoint": pub.endpoint, "frames_sent": pub.frames_sent, "seconds": seconds,
            "rate_hz": pub.frames_sent / seconds if seconds else 0.0, "series": n_series}


def write_stream1_dump(
    path: str | os.PathLike[str],
    source: Any = None,
    *,
    scan: tuple[int, int] = (16, 16),
    det: tuple[int, int] = (64, 64),
    dtype: str = "uint16",
    compression: str = "bslz4",
    series: int = 1,
    order: ScanOrder = "raster",
    encoder_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one series as DECTRIS stream v1 message parts into a dump file.

    The layout LiberTEM-live's DECTRIS simulator replays
    (``python -m libertem_live.detectors.dectris.sim DUMP``): every message part, in
    order, as its length (int64, little-endian) and its bytes. That simulator sends the
    first two parts as the header and the detector config, then four parts per image, so
    the defaults here send ``header_detail: "basic"`` and no appendix (the scan shape then
    travels with neither: give it to the receiver), and ``trigger_mode: "exte"`` (one
    image per trigger, as a scan generator triggers the detector: that simulator sends
    every image once armed, no trigger command needed).

    Parameters
    ----------
    path : str or PathLike
        The file to write (replaced).
    source, scan, det, dtype, compression, order
        As for :func:`simulate_stream`.
    series : int
        The series id.
    encoder_options : mapping, optional
        :class:`~framescope.live._stream1.Stream1Encoder` options over the defaults
        ``{"header_detail": "basic", "appendix": False, "trigger_mode": "exte"}`` (and
        ``md5`` True).

    Returns
    -------
    dict
        ``path``, ``frames``, ``bytes`` (of the file).
    """
    arr = _source(source, scan, det, dtype)
    if arr.ndim != 4:
        raise ValueError(f"source: expected (scan_y, scan_x, det_y, det_x) frames, found "
                         f"dims {arr.dims}")
    ny, nx, h, w = arr.shape
    options = {"header_detail": "basic", "appendix": False, "trigger_mode": "exte",
               **(encoder_options or {})}
    enc = make_encoder("dectris-stream1", compression, **options)
    header: dict[str, Any] = {}
    if "calibration" in arr.attrs:
        header[HEADER_KEY] = json.loads(arr.attrs["calibration"])
    start = SeriesStart(series, (h, w), np.dtype(arr.dtype), ny * nx, (ny, nx), order, header)
    frames = 0
    with open(path, "wb") as f:
        def write(parts: list[Any]) -> None:
            for part in parts:
                view = memoryview(part)
                if view.ndim != 1 or view.itemsize != 1:
                    view = view.cast("B")
                f.write(struct.pack("<q", view.nbytes))
                f.write(view)

        write(enc.start(start))
        for index, frame in _frames_of(arr, order):
            write(enc.frame(series, index, frame))
            frames += 1
        write(enc.end(series))
        size = f.tell()
    return {"path": os.fspath(path), "frames": frames, "bytes": size}
