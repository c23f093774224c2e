"""ZeroMQ receiver: one thread that receives messages and gives them to its ``Intake``.

The thread never waits on analysis: frames go into bounded batches (see ``_batch``), and
what does not fit is dropped or spilled by the user's policy, always counted. Malformed
messages are counted and logged (rate-limited), never raised (see ``_intake``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zmq

from framescope.live import _codecs, _decode, _fastrecv
from framescope.live._batch import Policy, use_decode_pool
from framescope.live._intake import Intake
from framescope.live._messages import MessageError, ScanOrder
from framescope.live._protocols import make_decoder
from framescope.live._record import Recorder, RecordingThread
from framescope.live._scan import Series
from framescope.live._status import Counters, Status

if TYPE_CHECKING:
    from framescope.corrections import DarkStats

__all__ = ["ZMQSource"]

log = logging.getLogger(__name__)

_COPY_BELOW = 64 * 1024  # B: after a message below this, the next is received as bytes
_POLL_MS = 20  # housekeeping at least this often (ms)
#: stream v1 image messages go through the compiled receive loop (``_fastrecv``)
FAST_RECEIVE = os.environ.get("FRAMESCOPE_FAST_RECEIVE", "1") != "0"


def _pair(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected (height, width), found {value!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"{name}: expected positive sizes, found {value!r}")
    return a, b


def _calibration_json(value: Any) -> str | None:
    """The user's calibration as JSON (validated now: a bad field fails at construction)."""
    if value is None:
        return None
    from framescope.calibration import Calibration

    if isinstance(value, str):
        return Calibration.from_json(value).to_json()
    if not isinstance(value, Calibration):
        value = Calibration().updated("user", **dict(value))
    return value.to_json()


class ZMQSource:
    """Frames from a detector's ZeroMQ PUSH socket (DECTRIS stream v1/stream2, native).

    The source connects a PULL socket (detectors bind PUSH), decodes messages in a thread
    and keeps counters and the latest frame. :func:`framescope.submit` runs analyses on it.

    Parameters
    ----------
    endpoint : str
        ZeroMQ endpoint, e.g. ``"tcp://127.0.0.1:9999"``.
    protocol : {"dectris-stream2", "dectris-stream1", "native"}
    scan : (int, int), optional
        Scan shape ``(scan_y, scan_x)``; default from the series header. Needed to join a
        series whose header was missed (frames carry their shape and dtype).
    order : {"raster", "snake"}, optional
        Scan order; default from the header, else raster.
    channel : str, optional
        stream2 channel to analyse (default the first).
    policy : {"drop", "spill"}
        What happens to frames that arrive when the in-memory buffer is full: dropped
        (counted in ``status.dropped``) or written to a temp file and analysed later
        (``status.spilled``).
    buffer_mib : float
        Memory for frames waiting for analysis.
    spill_dir : str, optional
        Directory of spill files (default the system temp dir; pick a disk, not tmpfs).
    spill_limit_gib : float
        Spill file size beyond which frames are dropped (counted).
    stall_timeout : float
        Seconds without a message, mid-series, after which the state becomes ``stalled``.
    header_timeout : float
        Seconds a series' frames may come without a usable header (frame shape, number of
        images; ``scan`` not given) before it is given up: state ``failed``, the reason in
        ``last_error``, its frames skipped (counted).
    max_message_bytes : int
        Larger messages are counted as malformed and skipped.
    bind : bool
        Bind instead of connect (to receive from senders that connect).
    rcvhwm : int, optional
        ZeroMQ receive high-water mark (messages queued in ZeroMQ).
    batch_frames : int, optional
        Frames per batch handed to the analysis (default ~4 MiB of frames); a batch also
        leaves after 50 ms when frames arrive slowly.
    verify_hash : bool
        dectris-stream1 only: check every blob against the MD5 in its ``dimage-1.0`` part;
        a mismatch counts as malformed. Costs ~0.2 ms per 128 KiB frame.
    record : str or PathLike, optional
        New HDF5 file to record into: every frame the receiver thread accepts (before the
        drop/spill policy, so dropped frames too; a repeated frame number once), every
        series header with its header arrays, and at each series' end the receiver's
        counters. ``framescope replay`` re-sends it. Analyses attached or not, this
        records what arrives on this source's socket (not on receivers in other
        processes). A thread of its own writes, so the receiver never waits on the
        disk. Closed by :meth:`stop`, appended to by a later :meth:`start`.
    record_compression : {None, "bslz4", "lz4"}
        HDF5 filter of the recorded frames. None (default) writes frames as they are;
        frames that arrive compressed the same way are stored as they came, others are
        compressed by the recording thread (docs/live.md, "Recording and replay", lists
        the costs).
    record_buffer_mib : float
        Memory for received frames waiting to be written. When the disk is slower than
        the stream for longer than this lasts, frames are not recorded, counted in
        ``status.record_dropped``.
    decode_threads : int, optional
        Threads that decode compressed frames (bslz4, lz4), without the GIL, straight into
        the batch buffers, while the receiver thread goes on receiving. Default: the
        machine's cores, at most 4. 0 decodes on the receiver thread (still into the batch
        buffer). Uncompressed frames are copied by the receiver thread either way.
    calibration : Calibration, dict of fields or JSON str, optional
        The data's physical calibration (see :class:`framescope.calibration.Calibration`).
        Combined with what the series header says (DECTRIS beam centre, pixel size,
        detector distance, wavelength; a framescope sender's whole calibration), the
        given fields winning; results then carry physical coordinates and masks may be
        given in mrad.

    Raises
    ------
    FileExistsError
        ``record`` exists.

    Examples
    --------
    >>> src = ZMQSource("tcp://127.0.0.1:9999", protocol="dectris-stream2", scan=(128, 128))
    >>> job = framescope.submit([ApplyMasks(ring), CenterOfMass()], src)  # doctest: +SKIP
    >>> job.partial()[0]["done"].mean()  # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:9999",
        protocol: str = "dectris-stream2",
        *,
        scan: tuple[int, int] | None = None,
        order: ScanOrder | None = None,
        channel: str | None = None,
        policy: Policy = "drop",
        buffer_mib: float = 512,
        spill_dir: str | None = None,
        spill_limit_gib: float = 8,
        stall_timeout: float = 5.0,
        header_timeout: float = 10.0,
        max_message_bytes: int = 256 * 2**20,
        bind: bool = False,
        rcvhwm: int | None = None,
        batch_frames: int | None = None,
        verify_hash: bool = False,
        record: str | os.PathLike[str] | None = None,
        record_compression: Literal["bslz4", "lz4"] | None = None,
        record_buffer_mib: float = 1024,
        decode_threads: int | None = None,
        calibration: Any = None,
    ) -> None:
        if policy not in ("drop", "spill"):
            raise ValueError(f"policy: expected 'drop' or 'spill', found {policy!r}")
        if order not in (None, "raster", "snake"):
            raise ValueError(f"order: expected 'raster' or 'snake', found {order!r}")
        if decode_threads is not None and (isinstance(decode_threads, bool) or not isinstance(
                decode_threads, int) or decode_threads < 0):
            raise ValueError(f"decode_threads: expected an int >= 0 or None, found "
                             f"{decode_threads!r}")
        # the options again, for receivers in other processes (submit(processes=N))
        self._options = {
            "channel": channel, "policy": policy, "buffer_mib": buffer_mib,
            "spill_dir": spill_dir, "spill_limit_gib": spill_limit_gib,
            "stall_timeout": stall_timeout, "header_timeout": header_timeout,
            "max_message_bytes": max_message_bytes,
            "rcvhwm": rcvhwm, "batch_frames": batch_frames, "verify_hash": verify_hash,
            "decode_threads": decode_threads,
            "calibration": _calibration_json(calibration)}
        self.endpoint, self.protocol = endpoint, protocol
        self.scan, self.order = _pair(scan, "scan"), order
        self.policy: Policy = policy
        self.buffer_bytes = int(buffer_mib * 2**20)
        self.spill_dir, self.spill_limit = spill_dir, int(spill_limit_gib * 2**30)
        self.stall_timeout = float(stall_timeout)
        self.max_message_bytes = int(max_message_bytes)
        self.bind, self.rcvhwm = bind, rcvhwm
        self.batch_frames = batch_frames
        self.decode_threads = (min(4, os.cpu_count() or 1) if decode_threads is None
                               else decode_threads)
        # not among _options: receivers in other processes do not record
        self.record = None if record is None else os.fspath(record)
        self._recorder = None if record is None else RecordingThread(
            Recorder(record, protocol=protocol, compression=record_compression),
            int(record_buffer_mib * 2**20))
        self._intake = Intake(
            endpoint, make_decoder(protocol, channel=channel,
                                   max_frame_bytes=min(self.max_message_bytes, 2**31),
                                   verify_hash=verify_hash),
            scan=self.scan, order=order, policy=policy, buffer_bytes=self.buffer_bytes,
            batch_frames=batch_frames, spill_dir=spill_dir, spill_limit=self.spill_limit,
            stall_timeout=self.stall_timeout, max_message_bytes=self.max_message_bytes,
            recorder=self._recorder, calibration=self._options["calibration"],
            header_timeout=float(header_timeout))
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._dark: DarkStats | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ZMQSource:
        """Open the socket and start receiving (returns self; no-op if started).

        Raises
        ------
        zmq.ZMQError
            The endpoint cannot be connected/bound.
        """
        if self._thread is not None:
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="framescope-receiver",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        """Stop receiving and close the socket; an open series is handed on as unfinished.

        The recording (``record=``) is closed, complete and readable, once this returns.
        """
        if self._thread is None:
            if self._recorder is not None:  # never started, or failed to
                self._recorder.close()
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self._intake.state = "stopped"

    def __enter__(self) -> ZMQSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def options(self) -> dict[str, Any]:
        """The receiving options, for receivers started elsewhere (processes, dask workers)."""
        return dict(self._options)

    # -- what users read -------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """Counters and state of the current series (a consistent-enough snapshot)."""
        return self._intake.status()

    @property
    def counters(self) -> Counters:
        """The receiver's live counters (prefer :attr:`status`)."""
        return self._intake.counters

    def latest_frame(self) -> np.ndarray | None:
        """A copy of the last frame received (for display at a few Hz), or None."""
        frame = self._intake.latest
        if frame is None:
            return None
        try:
            return np.array(frame)  # (a compressed frame is decoded here)
        except MessageError:  # its payload is corrupt (counted when its batch decodes it)
            return None

    @property
    def series(self) -> Series | None:
        """The series being (or last) received."""
        return self._intake.series

    @property
    def series_open(self) -> bool:
        """True while a series is being received (started and not ended/closed)."""
        return self._intake.series is not None and not self._intake.ended

    def seen(self, series: int) -> bool:
        """Whether ``series`` was received here (the current one or one of the last 16)."""
        s = self._intake.series
        return (s is not None and s.series == series) or series in self._intake.finished_ids

    def quiet_for(self) -> float:
        """Seconds the receiver thread has waited on an empty socket (0 while it is busy
        with messages, or before it first waited)."""
        return self._intake.quiet_for()

    def frame_progress(self) -> tuple[int, int]:
        """(distinct frame numbers received, highest frame number) of the series."""
        t = self._intake.tracker
        return (0, -1) if t is None else (t.unique, t.highest)

    # -- dark series ------------------------------------------------------------------------

    def take_dark(self, n_series: int = 1) -> None:
        """Treat the next ``n_series`` series as dark series ("take dark").

        A stream job on this source (:func:`framescope.submit`, one receiver) reduces a
        dark series to per-pixel dark statistics instead of running its analyses, and
        corrects the series that follow with them (:attr:`dark`). Series whose header marks
        them dark (``{"framescope": {"dark": true}}``, see docs/live.md) are dark anyway.
        ``take_dark(0)`` withdraws requests not yet used.

        Raises
        ------
        ValueError
            ``n_series`` is negative or not an int.
        """
        if isinstance(n_series, bool) or not isinstance(n_series, int) or n_series < 0:
            raise ValueError(f"take_dark: n_series: expected an int >= 0, found {n_series!r}")
        self._intake.request_dark(n_series)

    @property
    def dark_requested(self) -> int:
        """Series still to be taken as dark series (requests of :meth:`take_dark`)."""
        return self._intake.dark_requests

    @property
    def dark(self) -> DarkStats | None:
        """The dark statistics in use: of the last dark series a job on this source
        analysed (:class:`~framescope.corrections.DarkStats`: ``mean``, ``std``, ``n``,
        ``bad``, ``report()``), or given to :meth:`use_dark`; None before any."""
        return self._dark

    def use_dark(self, stats: DarkStats | None) -> None:
        """Correct the next series with ``stats`` (None: no dark any more).

        Called by the stream job when a dark series has been analysed; call it to reuse a
        dark taken earlier (``framescope.corrections.from_dark`` of dark frames).
        """
        self._dark = stats

    # -- hooks for the engine's analysis (framescope.submit) ---------------------------------

    def attach(self, handoff: queue.SimpleQueue) -> None:
        """Hand batches to ``handoff`` from now on (from the current series' next frame)."""
        self._intake.attach_request = handoff  # the receiver thread picks it up
        if self._thread is None:
            self._intake.take_attach()

    def request_end(self, series: int, grace: float) -> None:
        """End ``series`` once no message came for ``grace`` s (its end went elsewhere)."""
        self._intake.end_request = (series, grace)

    # -- receiver thread -------------------------------------------------------------------

    def _open_socket(self) -> zmq.Socket:
        sock = zmq.Context.instance().socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        if self.rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        if self.bind:
            sock.bind(self.endpoint)
            self.endpoint = self._intake.name = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            sock.connect(self.endpoint)
        return sock

    def _loop(self) -> None:
        try:
            if self._recorder is not None:
                self._recorder.start()  # (the file again, if an earlier stop() closed it)
            if self.decode_threads and _decode.available():
                _decode.warm()  # before connecting: see warm()
            fast_ok = self._intake.fast_on and FAST_RECEIVE and _fastrecv.available()
            if fast_ok:
                try:
                    _fastrecv.warm()
                except Exception:  # (a libzmq numba cannot link): the Python receive
                    log.warning("the compiled receive loop is unavailable", exc_info=True)
                    fast_ok = False
            # the calibration model (pydantic) before connecting, not on the first
            # calibrated header, while that series' frames queue unread (~0.5-1 s)
            import framescope.calibration  # noqa: F401
            sock = self._open_socket()
        except (zmq.ZMQError, OSError) as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        intake = self._intake
        # compressed frames are decoded by the batches they go into, on the pool's threads
        pool = None
        if self.decode_threads and _decode.available():
            pool = _decode.DecodePool(self.decode_threads)
        _codecs.defer_frames(True)
        use_decode_pool(pool)
        # a blocking receive with a timeout, not poll + non-blocking receives: when the
        # receiver keeps up, each poll found about one message, and a poll (a new Poller)
        # and the zmq.Again that ended the burst cost more than decoding the message
        sock.setsockopt(zmq.RCVTIMEO, _POLL_MS)
        recv, handle, stopping = sock.recv_multipart, intake.handle, self._stopping
        # stream v1 image messages: a compiled loop, while the batches take them
        fast = _fastrecv.FastImages(intake, sock) if fast_ok else None
        due = 0.0  # next housekeeping, also while messages keep coming
        copy = False
        try:
            while not stopping.is_set():
                try:
                    if fast is None or not fast.receive():
                        handle(recv(copy=copy))
                    # small messages (compressed frames) are copied into bytes: cheaper
                    # than a zmq.Frame per part, its memoryview and its release
                    copy = intake.last_size < _COPY_BELOW
                    now = time.monotonic()
                    if now < due:
                        continue
                except zmq.Again:
                    now = time.monotonic()
                    intake.idle(now)
                if intake.attach_request is not None:
                    intake.take_attach()
                intake.housekeeping(now)
                due = now + _POLL_MS / 1000
        finally:
            sock.close(linger=0)
            intake.close()  # an open series ends unfinished, in the recording too
            if pool is not None:
                pool.close()
            if self._recorder is not None:
                self._recorder.close()  # writes what is queued first

