"""Partials and status between receiver processes and the merging process, without pickle.

A message is a JSON head part followed by one raw part per array; the head lists each
array's group, key, dtype and shape.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from framescope.engine._tasks import Partial
from framescope.live import MessageError

__all__ = ["calibration_of", "decode_message", "encode_message", "encode_partial", "partial_of"]


def encode_message(head: dict[str, Any], arrays: list[tuple[str, str, np.ndarray]] = (),
                   ) -> list[Any]:
    """``head`` plus ``(group, key, array)`` triples as message parts."""
    parts: list[Any] = []
    specs = []
    for group, key, a in arrays:
        a = np.asarray(a)
        if not a.flags.c_contiguous:  # (ascontiguousarray would make 0-d arrays 1-d)
            a = a.copy()
        specs.append({"group": group, "key": key, "dtype": a.dtype.str, "shape": a.shape})
        parts.append(a)
    return [json.dumps({**head, "arrays": specs}).encode(), *parts]


def decode_message(parts: list[Any]) -> tuple[dict[str, Any], list[tuple[str, str, np.ndarray]]]:
    """Inverse of :func:`encode_message` (arrays view the message buffers, read-only)."""
    try:
        head = json.loads(bytes(parts[0]))
        specs = head.pop("arrays")
        arrays = [(s["group"], s["key"],
                   np.frombuffer(p, dtype=np.dtype(s["dtype"])).reshape(s["shape"]))
                  for s, p in zip(specs, parts[1:], strict=True)]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise MessageError(f"worker message: {exc}") from exc
    return head, arrays


def encode_partial(head: dict[str, Any], part: Partial) -> list[Any]:
    """A :class:`Partial` as message parts."""
    arrays = [("positions", "", part.positions)]
    arrays += [("nav", k, v) for k, v in part.nav.items()]
    arrays += [("acc", k, v) for k, v in part.acc.items()]
    return encode_message({**head, "kind": "partial"}, arrays)


def partial_of(arrays: list[tuple[str, str, np.ndarray]]) -> Partial:
    """The :class:`Partial` carried by a decoded message's arrays."""
    positions = next(a for g, _, a in arrays if g == "positions")
    return Partial(positions, {k: a for g, k, a in arrays if g == "nav"},
                   {k: a for g, k, a in arrays if g == "acc"})


def calibration_of(head: dict[str, Any]) -> Any:
    """The :class:`~framescope.calibration.Calibration` a message head carries, or None
    (pydantic is imported only when there is one)."""
    text = head.get("calibration")
    if text is None:
        return None
    from framescope.calibration import Calibration

    return Calibration.from_json(text)
