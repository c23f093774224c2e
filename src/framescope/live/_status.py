"""Counters of a live source/run and the immutable :class:`Status` snapshot users read.

Each counter has a single writer thread (receiver or analysis), so plain ints suffice under
the GIL; readers build a :class:`Status` at any moment without locks.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["RECEIVER_FIELDS", "Counters", "Status"]

State = Literal["idle", "receiving", "stalled", "draining", "finished", "stopped", "failed"]

#: distinct reasons counted in :attr:`Status.malformed_by`; more are counted as "other"
MAX_REASONS = 32

#: The fields of a :class:`Status` that the receiver owns (a recording stores these)
RECEIVER_FIELDS = (
    "state", "series", "frames_expected", "frames_received", "recorded", "record_dropped",
    "bytes_received", "dropped", "spilled", "malformed", "gaps", "duplicates",
    "out_of_order", "policy", "last_error", "malformed_by")


@dataclass(frozen=True, slots=True)
class Status:
    """Where a live source or run stands (all counts for the current series).

    Attributes
    ----------
    state : {"idle", "receiving", "stalled", "draining", "finished", "stopped", "failed"}
        ``idle``: no series yet; ``stalled``: no message for ``stall_timeout`` s in the
        middle of a series (sender gone?); ``draining``: the series ended, analysis is
        catching up (spilled frames); ``finished``: all received frames are in the results;
        ``failed``: frames came for ``header_timeout`` s of a series that cannot be received
        (no usable header: no frame shape or number of images, no ``scan=``); ``series``
        and ``last_error`` say which and why, and its frames are skipped (counted).
    series : int or None
        Series id from the protocol.
    frames_expected : int or None
        Scan positions of the series.
    frames_received : int
        Frame messages decoded (duplicates, dropped and spilled ones included).
    frames_processed : int
        Frames merged into the results.
    bytes_received : int
        Message bytes of the series.
    rate_hz : float
        Frames received per second over the last ~0.5 s.
    mb_per_s : float
        Megabytes received per second over the last ~0.5 s.
    dropped : int
        Frames lost on purpose: ``policy="drop"`` with the buffer full, or the spill file
        full. Their positions stay not done.
    spilled : int
        Frames written to the spill file.
    spill_pending : int
        Spilled frames not yet analysed.
    malformed : int
        Messages skipped: undecodable, truncated, oversized, wrong shape, frame number
        outside the scan, frames of a finished series or without a usable header, header
        parts without their header, ends of series not received. Those skipped between
        two series count for the next one.
    malformed_by : dict of str to int
        ``malformed`` by reason (a short key such as ``"no header"``, ``"hash mismatch"``,
        ``"stream1 dimage_d"``; at most 32 keys, then ``"other"``).
    recorded : int
        Frames written to the source's recording (``ZMQSource(record=...)``): every frame
        received (once), dropped and spilled ones included. It lags ``frames_received``
        by the frames waiting to be written.
    record_dropped : int
        Frames received but not recorded: the recording's buffer was full (the disk
        slower than the stream for too long), or writing failed (see ``last_error``).
    gaps : int
        Frame numbers below the highest one received that have not arrived (at the end of a
        series: every missing frame).
    duplicates : int
        Frames whose number was already received (not analysed again).
    out_of_order : int
        Frames that arrived after a higher frame number.
    queue_depth : int
        Frames in memory waiting for analysis.
    queue_capacity : int
        The bound on ``queue_depth``.
    latency_s : float
        Time from receiving a frame to its result being visible, for the last batch.
    latency_max_s : float
        The largest ``latency_s`` of the series.
    lost : int
        Parallel receivers: frames a lost receiver had taken for analysis but never
        delivered (their positions stay not done).
    receivers_lost : int
        Parallel receivers: receivers that died or went silent during the job (named in
        ``last_error``); the others go on.
    policy : {"drop", "spill"}
    last_error : str
        The latest malformed-message reason.
    """

    state: State = "idle"
    series: int | None = None
    frames_expected: int | None = None
    frames_received: int = 0
    frames_processed: int = 0
    bytes_received: int = 0
    rate_hz: float = 0.0
    mb_per_s: float = 0.0
    dropped: int = 0
    spilled: int = 0
    spill_pending: int = 0
    malformed: int = 0
    recorded: int = 0
    record_dropped: int = 0
    gaps: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    queue_depth: int = 0
    queue_capacity: int = 0
    latency_s: float = 0.0
    latency_max_s: float = 0.0
    lost: int = 0
    receivers_lost: int = 0
    policy: str = "drop"
    last_error: str = ""
    malformed_by: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict for NetCDF attrs: scalars and strings only
        (``malformed_by`` as a JSON string)."""
        out = asdict(self)
        out["malformed_by"] = json.dumps(self.malformed_by)
        return out


class Counters:
    """Receiver-side counters of the current series; see :class:`Status` for their meaning."""

    __slots__ = (
        "_rate_bytes", "_rate_frames", "_rate_t", "bytes_received", "dropped", "duplicates",
        "frames_received", "last_error", "malformed", "malformed_by", "mb_per_s",
        "out_of_order", "rate_hz", "record_dropped", "spilled",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        for name in self.__slots__:
            setattr(self, name, "" if name == "last_error" else 0)
        self.malformed_by: dict[str, int] = {}
        self._rate_t = time.monotonic()

    def skipped(self, reason: str, why: str) -> None:
        """Count one skipped message under ``reason``; ``why`` becomes ``last_error``."""
        self.malformed += 1
        by = self.malformed_by
        if reason not in by and len(by) >= MAX_REASONS:
            reason = "other"
        # a new dict: readers in other threads copy it without a lock
        self.malformed_by = {**by, reason: by.get(reason, 0) + 1}
        self.last_error = why

    def update_rate(self, now: float, every: float = 0.5) -> None:
        """Refresh ``rate_hz``/``mb_per_s`` when ``every`` seconds have passed (receiver)."""
        dt = now - self._rate_t
        if dt < every:
            return
        self.rate_hz = (self.frames_received - self._rate_frames) / dt
        self.mb_per_s = (self.bytes_received - self._rate_bytes) / dt / 1e6
        self._rate_t, self._rate_frames = now, self.frames_received
        self._rate_bytes = self.bytes_received
