"""Events and results between the job and workers on other processes, without pickle.

A message is :func:`framescope.engine` 's wire format (a JSON head, then one raw part per
array). Values that are not arrays (numbers, strings, lists, dicts of them) travel in the
head; arrays anywhere in a dict travel as parts named by their key path.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from framescope.engine import decode_message, encode_message
from framescope.events._former import Event, StreamFrame

__all__ = ["decode_event", "decode_result", "encode_event", "encode_result", "split_arrays"]

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


def encode_event(event: Event) -> list[Any]:
    """An :class:`Event` as message parts."""
    arrays: list[tuple[str, str, np.ndarray]] = []
    streams = {s: [[f.frame, split_arrays(f.data, f"{s}/{f.frame}", arrays)] for f in frames]
               for s, frames in event.streams.items()}
    head = {"kind": "event", "event": event.number, "streams": streams,
            "complete": event.complete, "missing": event.missing, "reason": event.reason,
            "worker": event.worker, "version": event.parameters_version}
    return encode_message(head, arrays)


def decode_event(head: dict[str, Any], arrays: list[tuple[str, str, np.ndarray]]) -> Event:
    """The :class:`Event` of a decoded message (arrays view the message: read-only)."""
    parts = [a for _, _, a in arrays]
    streams = {s: [StreamFrame(f, _join_arrays(d, parts)) for f, d in frames]
               for s, frames in head["streams"].items()}
    return Event(head["event"], streams, complete=head["complete"],
                 missing={s: list(v) for s, v in head["missing"].items()},
                 reason=head["reason"], worker=head["worker"],
                 parameters_version=head["version"])


def encode_result(head: dict[str, Any], value: Any) -> list[Any]:
    """A worker's result (``head``: event, version, worker, complete, reason) as parts;
    a value that cannot be sent becomes an error result."""
    arrays: list[tuple[str, str, np.ndarray]] = []
    try:
        body = split_arrays(value, "", arrays)
        json.dumps(body)
    except (TypeError, ValueError) as exc:
        return encode_message({**head, "kind": "result", "value": None,
                               "error": f"result of event {head.get('event')}: {exc}"})
    return encode_message({**head, "kind": "result", "value": body}, arrays)


def decode_result(head: dict[str, Any], arrays: list[tuple[str, str, np.ndarray]]) -> Any:
    """The value of a decoded result message."""
    return _join_arrays(head["value"], [a for _, _, a in arrays])


def decode(parts: list[Any]) -> tuple[dict[str, Any], list[tuple[str, str, np.ndarray]]]:
    """Head and arrays of a message."""
    return decode_message(parts)
