"""The status of a parallel stream job: the receivers' counters summed, gaps, lost
frames and the state, as the merging side sees them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from framescope.engine._job import first
from framescope.live import Status

__all__ = ["SeriesState", "merged_status"]

_SUMMED = ("frames_received", "frames_processed", "bytes_received", "rate_hz", "mb_per_s",
           "dropped", "spilled", "spill_pending", "malformed", "duplicates", "out_of_order",
           "queue_depth", "queue_capacity")


@dataclasses.dataclass(slots=True)
class SeriesState:
    """What the merging thread knows of the current series beyond the results."""

    ended_by: set[int] = dataclasses.field(default_factory=set)
    end_sent: bool = False
    late: int = 0
    processed: int = 0


def merged_status(worker_status: Iterable[dict[str, Any]], merge: Any, s: SeriesState, *,
                  lost: int, receivers_lost: int, policy: str, errors: list[str]) -> Status:
    """One :class:`Status` from each receiver's newest status head and the merge."""
    series = merge.series
    sid = None if series is None else series.series
    sts = [w for w in worker_status if w["status"]["series"] == sid]
    summed = {k: sum(w["status"][k] for w in sts) for k in _SUMMED}
    summed["frames_processed"] = s.processed  # counted here: statuses lag
    summed["malformed"] += s.late
    state = "idle"
    if merge.final is not None:
        state = first(merge.final).attrs.get("state", "finished")
    elif s.end_sent:
        state = "draining"
    elif series is not None:
        states = {w["status"]["state"] for w in sts}
        state = "stalled" if states == {"stalled"} else "receiving"
    unique = sum(w["unique"] for w in sts)
    ended = s.end_sent or merge.final is not None
    top = (series.n_frames if ended and series is not None
           else max((w["highest"] for w in sts), default=-1) + 1)
    worker_errors = [w["status"]["last_error"] for w in sts if w["status"]["last_error"]]
    return Status(
        state=state, series=sid, frames_expected=None if series is None else series.n_frames,
        gaps=max(0, top - unique) if series is not None else 0, lost=lost,
        receivers_lost=receivers_lost,
        latency_s=max((w["status"]["latency_s"] for w in sts), default=0.0),
        latency_max_s=max((w["status"]["latency_max_s"] for w in sts), default=0.0),
        policy=policy, last_error=(errors or worker_errors or [""])[-1], **summed)
