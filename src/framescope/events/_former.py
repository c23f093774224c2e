"""Forming events: frames of several streams, held until the trigger map's next event has them.

The former is the sink of every stream receiver (:class:`framescope.live.StreamReceiver`):
frames wait here by stream and number. :meth:`EventFormer.form` hands out the next events
of the map, in order, as soon as all their frames came, or, when some never will, marked
incomplete with the reason: the stream ended without it, skipped it (later frames came and
``reorder_grace`` passed) or has been silent for ``timeout`` s. It never waits forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framescope.events._triggermap import EventSpec, TriggerMap

__all__ = ["Event", "EventFormer", "StreamFrame"]


@dataclass(slots=True)
class StreamFrame:
    """One frame of one stream in an event: its number and data (an array, or a dict of
    values for value streams)."""

    frame: int
    data: Any


@dataclass(slots=True)
class Event:
    """What a worker's ``process_event`` gets.

    Attributes
    ----------
    number : int
        The event's number in the trigger map.
    streams : dict of str to list of StreamFrame
        The frames of each stream, in the map's order (streams with ``to="all"`` too).
    complete : bool
        Every frame the map names for the event came.
    missing : dict of str to list of int
        Frames that did not come, by stream; ``reason`` says why.
    worker : int or None
        The virtual worker the map assigned.
    parameters_version : int
        The parameters the event was dispatched with.
    """

    number: int
    streams: dict[str, list[StreamFrame]]
    complete: bool = True
    missing: dict[str, list[int]] = field(default_factory=dict)
    reason: str = ""
    worker: int | None = None
    parameters_version: int = 0

    def __getitem__(self, stream: str) -> Any:
        """The data of ``stream``'s one frame; several frames of an array stream stacked."""
        frames = self.streams.get(stream)
        if not frames:
            have = ", ".join(k for k, v in self.streams.items() if v) or "none"
            raise KeyError(f"event {self.number} has no frame of stream {stream!r} "
                           f"(it has: {have}){'; ' + self.reason if self.reason else ''}")
        if len(frames) == 1:
            return frames[0].data
        if isinstance(frames[0].data, np.ndarray):
            return np.stack([f.data for f in frames])
        return [f.data for f in frames]


class EventFormer:
    """Hold frames by stream and form the trigger map's events in order.

    Parameters
    ----------
    trigger_map : TriggerMap
    counters : dict of str to framescope.live.StreamCounters
        The receivers' counters (started, ended, highest, last_heard) for giving up.
    timeout : float
        A stream silent this long (since its last frame, or since the job started) gives up
        on the frames an event still waits for.
    reorder_grace : float
        A frame still missing this long after a later frame of its stream came is skipped.
    max_buffered : int
        Frames held per stream; more arriving are dropped (counted) rather than exhaust
        memory when a stream runs far ahead of the others.
    """

    def __init__(self, trigger_map: TriggerMap, counters: Mapping[str, Any], *,
                 timeout: float = 10.0, reorder_grace: float = 0.5,
                 max_buffered: int = 100_000) -> None:
        self.map = trigger_map
        self.counters = counters
        self.timeout, self.reorder_grace, self.max_buffered = timeout, reorder_grace, max_buffered
        self.cond = threading.Condition()
        self._store: dict[str, dict[int, Any]] = {s: {} for s in trigger_map.streams}
        self._shared: dict[str, dict[int, Any]] = {s: {} for s in trigger_map.streams}
        self._consumed: dict[str, set[int]] = {s: set() for s in trigger_map.streams}
        self.next = 0
        self.started = time.monotonic()
        self._waiting_since: float | None = None
        self.dropped = dict.fromkeys(trigger_map.streams, 0)
        self.late = dict.fromkeys(trigger_map.streams, 0)
        self.incomplete = 0
        self.reasons: dict[str, int] = {}

    # -- the receivers' sink ---------------------------------------------------------------
    def on_start(self, stream: str, start: Any) -> None:
        with self.cond:
            self.cond.notify_all()

    def on_frame(self, stream: str, index: int, payload: Any, nbytes: int) -> None:
        with self.cond:
            if index in self._consumed[stream]:  # its event was formed without it
                self.late[stream] += 1
                return
            store = self._store[stream]
            if len(store) >= self.max_buffered:
                self.dropped[stream] += 1
                return
            store[index] = payload
            self.cond.notify_all()

    def on_end(self, stream: str, end: Any) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- forming ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The map is closed and all its events were formed."""
        return self.map.closed and self.next >= len(self.map)

    def form(self, now: float | None = None, limit: int = 256) -> list[Event]:
        """The next events that are ready (or given up on), in order; call with ``cond``
        held or not (it takes it)."""
        out: list[Event] = []
        with self.cond:
            while self.next < len(self.map) and len(out) < limit:
                spec = self.map[self.next]
                missing = self._missing(spec)
                reason = key = ""
                if missing:
                    now = time.monotonic() if now is None else now
                    if self._waiting_since is None:
                        self._waiting_since = now
                    reason, key = self._give_up(missing, now)
                    if not reason:
                        break
                out.append(self._take(spec, missing, reason, key))
                self._waiting_since = None
                self.next += 1
        return out

    def _missing(self, spec: EventSpec) -> dict[str, list[int]]:
        missing: dict[str, list[int]] = {}
        for s, sf in spec.streams.items():
            have = self._shared[s] if sf.to == "all" else self._store[s]
            lost = [f for f in sf.frames if f not in have and
                    not (sf.to == "all" and f in self._store[s])]
            if lost:
                missing[s] = lost
        return missing

    def _give_up(self, missing: dict[str, list[int]], now: float) -> tuple[str, str]:
        """Why the missing frames will not come and a key to count it by, or ("", "") to
        wait on."""
        why, keys = [], []
        for s, frames in missing.items():
            c = self.counters[s]
            # silence since the stream's last message, or since the job started: a stream
            # that stays silent fails every following event at once, not one timeout each
            silent = now - max(c.last_heard, self.started)
            if c.ended:
                kind, text = "ended", f"ended without frame(s) {_short(frames)}"
            elif c.highest > max(frames) and now - self._waiting_since >= self.reorder_grace:
                kind, text = "skipped", f"skipped frame(s) {_short(frames)}"
            elif silent >= self.timeout:
                kind = "was silent" if c.received else "sent nothing"
                text = f"{kind} for {silent:.0f} s (frame(s) {_short(frames)})"
            else:
                return "", ""
            why.append(f"stream {s!r} {text}")
            keys.append(f"stream {s!r} {kind}")
        return "; ".join(why), "; ".join(keys)

    def _take(self, spec: EventSpec, missing: dict[str, list[int]], reason: str,
              key: str) -> Event:
        streams: dict[str, list[StreamFrame]] = {}
        for s, sf in spec.streams.items():
            store, shared, consumed = self._store[s], self._shared[s], self._consumed[s]
            if sf.to == "all":  # kept: later events may name the same frames
                for f in sf.frames:
                    if f in store:
                        shared[f] = store.pop(f)
                streams[s] = [StreamFrame(f, shared[f]) for f in sf.frames if f in shared]
                continue
            got = [StreamFrame(f, store.pop(f)) for f in sf.frames if f in store]
            for f in sf.drop:
                store.pop(f, None)
            consumed.update(sf.consumed)
            if sf.to == "one":
                streams[s] = got
        if reason:
            self.incomplete += 1
            self.reasons[key] = self.reasons.get(key, 0) + 1
        return Event(spec.event, streams, complete=not missing, missing=missing,
                     reason=reason, worker=spec.worker)

    def buffered(self) -> dict[str, int]:
        """Frames waiting per stream."""
        with self.cond:
            return {s: len(v) for s, v in self._store.items()}


def _short(frames: list[int]) -> str:
    return ", ".join(map(str, frames[:4])) + (", ..." if len(frames) > 4 else "")
