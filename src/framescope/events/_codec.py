"""Events and results between the job and workers on other processes, without pickle.

A message is :func:`framescope.engine` 's wire format (a JSON head, then one raw part per
array). Values that are not arrays (numbers, strings, lists, dicts of them) travel in the
head; arrays anywhere in a dict travel as parts named by their key path.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from framescope.engine import encode_message
from framescope.events._former import Event, StreamFrame

__all__ = ["decode_events", "decode_results", "encode_events", "encode_results",
           "split_arrays"]

_ARRAY = "__array__"


def split_arrays(value: Any, path: str, arrays: list[tuple[str, str, np.ndarray]]) -> Any:
    """``value`` with every numpy array replaced by a reference to a part (appended to
    ``arrays``); numpy scalars become Python numbers.

    Raises
    ------
    TypeError
        A value JSON cannot carry (an object, a set, bytes).
    """
    if isinstance(value, np.ndarray):
        arrays.append(("a", path, value))
        return {_ARRAY: len(arrays) - 1}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): split_arrays(v, f"{path}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [split_arrays(v, f"{path}/{i}", arrays) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{path or 'value'}: {type(value).__name__} cannot be sent between "
                    "processes; expected numbers, strings, numpy arrays, lists and dicts")


def _join_arrays(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _ARRAY in value:
            return arrays[value[_ARRAY]]
        return {k: _join_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays) for v in value]
    return value


def _event_head(event: Event, arrays: list[tuple[str, str, np.ndarray]]) -> dict[str, Any]:
    streams = {s: [[f.frame, split_arrays(f.data, f"{s}/{f.frame}", arrays)] for f in frames]
               for s, frames in event.streams.items()}
    return {"event": event.number, "streams": streams, "complete": event.complete,
            "missing": event.missing, "reason": event.reason, "worker": event.worker,
            "version": event.parameters_version}


def encode_events(events: list[Event]) -> list[Any]:
    """Several :class:`Event` s as one message (one JSON head, their arrays as parts)."""
    arrays: list[tuple[str, str, np.ndarray]] = []
    heads = [_event_head(ev, arrays) for ev in events]
    return encode_message({"kind": "events", "events": heads}, arrays)


def decode_events(head: dict[str, Any], arrays: list[tuple[str, str, np.ndarray]],
                  ) -> list[Event]:
    """The events of a decoded message (arrays view the message: read-only)."""
    parts = [a for _, _, a in arrays]
    return [Event(h["event"], {s: [StreamFrame(f, _join_arrays(d, parts)) for f, d in frames]
                               for s, frames in h["streams"].items()},
                  complete=h["complete"], missing={s: list(v) for s, v in h["missing"].items()},
                  reason=h["reason"], worker=h["worker"], parameters_version=h["version"])
            for h in head["events"]]


def encode_results(worker: int, rows: list[tuple[dict[str, Any], Any]]) -> list[Any]:
    """Results of several events of ``worker`` (``(head, value)``: head with event, version,
    complete, reason, missing, error) as one message; a value that cannot be sent becomes
    an error result."""
    arrays: list[tuple[str, str, np.ndarray]] = []
    heads = []
    for head, value in rows:
        mark = len(arrays)
        try:
            body = split_arrays(value, "", arrays)
            json.dumps(body)
        except (TypeError, ValueError) as exc:
            del arrays[mark:]
            head = {**head, "error": f"result of event {head.get('event')}: {exc}"}
            body = None
        heads.append({**head, "value": body})
    return encode_message({"kind": "results", "worker": worker, "results": heads}, arrays)


def decode_results(head: dict[str, Any], arrays: list[tuple[str, str, np.ndarray]],
                   ) -> list[tuple[dict[str, Any], Any]]:
    """``(head, value)`` of each result of a decoded message."""
    parts = [a for _, _, a in arrays]
    return [(h, _join_arrays(h["value"], parts)) for h in head["results"]]
