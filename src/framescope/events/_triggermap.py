"""The trigger map: which frames of which stream make event n, and which worker gets them.

A map is a list of events, numbered 0, 1, 2, ...; each says, per stream, the frame numbers
that belong to it and where they go:

- ``"one"`` (default): to the event's worker;
- ``"all"``: to every worker (a header-like frame each of them needs);
- ``"discard"``: the frames are consumed and sent nowhere (a stream's unused frames);
- a stream the event does not name has no frame in it (dranspose's ``none``);
- ``drop``: further frames of a stream that the event consumes and sends nowhere (a
  counter's readings between two points).

``worker`` is a *virtual* worker: events sharing one go to the same real worker, in order
(stateful workers: image alignment, temporal correlation); ``None`` lets the job pick the
least loaded one. The map is append-only while the scan runs (reactive scans of unknown
length extend it column by column) and is closed when no event will follow.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

__all__ = ["EventSpec", "StreamFrames", "TriggerMap"]


class StreamFrames(BaseModel):
    """What one stream contributes to one event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: list[NonNegativeInt] = Field(default_factory=list)
    to: Literal["one", "all", "discard"] = "one"
    drop: list[NonNegativeInt] = Field(default_factory=list)

    @property
    def consumed(self) -> list[int]:
        """Every frame number the event takes from the stream (sent or dropped)."""
        return [*self.frames, *self.drop]


class EventSpec(BaseModel):
    """One event of a trigger map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: NonNegativeInt
    streams: dict[str, StreamFrames]
    worker: NonNegativeInt | None = None


class _MapFile(BaseModel):
    """The JSON form of a whole map."""

    model_config = ConfigDict(extra="forbid")

    streams: list[str]
    events: list[EventSpec]
    closed: bool = False


class TriggerMap:
    """Events from several streams: an append-only, validated list of :class:`EventSpec`.

    Parameters
    ----------
    streams : sequence of str
        The streams' names.
    events : iterable of EventSpec or dict, optional
        The first events (more with :meth:`extend`).
    closed : bool
        No event will be appended (a scan of known length).

    Raises
    ------
    ValueError
        An event that is not the next number, names an unknown stream, or claims a frame
        an earlier event already has.
    """

    def __init__(self, streams: Sequence[str], events: Iterable[EventSpec | Mapping] = (),
                 *, closed: bool = False) -> None:
        if not streams or len(set(streams)) != len(streams):
            raise ValueError(f"streams: expected distinct names, found {list(streams)!r}")
        self.streams: tuple[str, ...] = tuple(streams)
        self._events: list[EventSpec] = []
        self._claimed: dict[str, set[int]] = {s: set() for s in self.streams}
        self._lock = threading.Lock()
        self._closed = False
        # (frames, drop, stateful) of a per_point map: what extend_points appends
        self._block: tuple[dict[str, int], dict[str, int], bool] | None = None
        self.extend(events)
        self._closed = closed

    # -- building --------------------------------------------------------------------------
    def extend(self, events: Iterable[EventSpec | Mapping]) -> int:
        """Append events (the next numbers, in order); returns the map's length.

        Raises
        ------
        ValueError
            The map is closed, or an event is invalid (nothing of the call is appended).
        """
        with self._lock:
            if self._closed:
                raise ValueError("trigger map: closed, no event can be appended")
            new, claims = [], {s: set() for s in self.streams}
            for k, spec in enumerate(events):
                spec = self._valid(spec, len(self._events) + k)
                for name, sf in spec.streams.items():
                    if sf.to == "all":
                        continue  # one frame may go to every worker of several events
                    taken = sf.consumed
                    dup = self._claimed[name].intersection(taken) | claims[name].intersection(
                        taken)
                    if dup or len(set(taken)) != len(taken):
                        raise ValueError(
                            f"trigger map event {spec.event}: frames "
                            f"{sorted(dup) or taken} of stream {name!r} belong to an "
                            "earlier event already (each frame makes one event)")
                    claims[name].update(taken)
                new.append(spec)
            self._events.extend(new)
            for name, c in claims.items():
                self._claimed[name] |= c
            return len(self._events)

    def append(self, streams: Mapping[str, Any], worker: int | None = None) -> int:
        """Append the next event: ``streams`` maps names to frame numbers (a list, or a
        :class:`StreamFrames` / dict with ``frames`` and ``to``); returns its number."""
        n = len(self._events)
        self.extend([{"event": n, "streams": {
            s: v if isinstance(v, StreamFrames | Mapping) else {"frames": list(v)}
            for s, v in streams.items()}, "worker": worker}])
        return n

    def close(self) -> None:
        """No event will follow (the job ends once every event is reduced)."""
        with self._lock:
            self._closed = True

    def _valid(self, spec: EventSpec | Mapping, number: int) -> EventSpec:
        try:
            spec = spec if isinstance(spec, EventSpec) else EventSpec.model_validate(spec)
        except ValidationError as exc:
            raise ValueError(f"trigger map event {number}: {exc}") from None
        if spec.event != number:
            raise ValueError(f"trigger map: expected event {number} next, found event "
                             f"{spec.event} (events are numbered 0, 1, 2, ... in order)")
        unknown = set(spec.streams) - set(self.streams)
        if unknown:
            raise ValueError(f"trigger map event {number}: unknown stream(s) "
                             f"{sorted(unknown)}; the map's streams are {list(self.streams)}")
        return spec

    # -- reading ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether no event will be appended."""
        return self._closed

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, event: int) -> EventSpec:
        return self._events[event]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<TriggerMap {len(self)} events of {', '.join(self.streams)} ({state})>"

    def to_json(self) -> str:
        """The map as JSON (:meth:`from_json` reads it back; stored with results)."""
        with self._lock:
            return _MapFile(streams=list(self.streams), events=list(self._events),
                            closed=self._closed).model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes | os.PathLike[str]) -> TriggerMap:
        """A map from :meth:`to_json` text, or from a file holding it."""
        if isinstance(text, os.PathLike) or (isinstance(text, str)
                                             and not text.lstrip().startswith("{")):
            with open(text, encoding="utf-8") as f:
                text = f.read()
        try:
            m = _MapFile.model_validate(json.loads(text))
        except (ValidationError, json.JSONDecodeError) as exc:
            raise ValueError(f"trigger map JSON: {exc}") from None
        return cls(m.streams, m.events, closed=m.closed)

    # -- the common maps -------------------------------------------------------------------
    @classmethod
    def per_point(cls, n_points: int | None, frames: Mapping[str, int], *,
                  stateful: bool = False, drop: Mapping[str, int] | None = None,
                  ) -> TriggerMap:
        """Event n takes the n-th block of ``frames[s]`` frames of every stream ``s``.

        ``{"det": 1, "i0": 1}``: one frame per stream per event; ``{"det": 4, "pos": 1}``:
        four detector frames per motor point. ``drop``: that many further frames of a
        stream per event are consumed and sent nowhere. ``stateful``: every event goes to
        one virtual worker (consecutive events on one worker). ``n_points=None``: an open
        map of no events yet, extended by :meth:`extend_points` (a scan of unknown length).
        """
        frames, drop = dict(frames), dict(drop or {})
        if any(k < 0 for k in (*frames.values(), *drop.values())):
            raise ValueError(f"per_point: frame counts must be >= 0, found {frames} {drop}")
        tm = cls(list(frames))
        tm._block = (frames, drop, stateful)
        if n_points is not None:
            tm.extend_points(n_points)
            tm.close()
        return tm

    def extend_points(self, n: int) -> int:
        """Append ``n`` events of a :meth:`per_point` map; returns the map's length."""
        block = self._block
        if block is None:
            raise ValueError("extend_points: only for maps made by TriggerMap.per_point")
        frames, drop, stateful = block
        events = []
        for e in range(len(self), len(self) + n):
            streams: dict[str, Any] = {}
            for s, k in frames.items():
                d = drop.get(s, 0)
                first = e * (k + d)
                streams[s] = {"frames": list(range(first, first + k)),
                              "drop": list(range(first + k, first + k + d))}
            events.append({"event": e, "streams": streams, "worker": 0 if stateful else None})
        return self.extend(events)
