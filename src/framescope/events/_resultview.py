"""Views of a reducer's published state for the results server: pure functions, no sockets.

The state is a mapping of name → numpy array, scalar, str, list or nested mapping. A view
is reached by path segments (``group/sub``); the last segment after an array is a numpy
basic-indexing slice in text (``100:110,::-1,...``), read by a small parser, never eval.
Failures raise :class:`ViewError` carrying the HTTP status that fits them.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MAX_JSON_ELEMENTS", "ViewError", "describe", "npy_bytes", "parse_index",
           "select", "to_json"]

#: Arrays bigger than this are served as .npy only: their JSON would be ~10x the bytes.
MAX_JSON_ELEMENTS = 1_000_000
_INT = re.compile(r"[+-]?\d+")


class ViewError(Exception):
    """A view cannot be made; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def parse_index(text: str) -> tuple[Any, ...]:
    """Read a numpy basic index from text: ``"100:110,::-1,..."``.

    Parameters
    ----------
    text : str
        Comma-separated parts, each an int, a slice ``a:b`` or ``a:b:c`` with optional
        (possibly negative) ints, or ``...`` (at most once).

    Returns
    -------
    tuple
        E.g. ``(slice(100, 110), slice(None, None, -1), Ellipsis)``.

    Raises
    ------
    ViewError
        400, naming the slice, the part that cannot be read and what is expected.
    """
    expected = ("expected comma-separated ints, a:b:c slices (parts optional) or one "
                "'...', e.g. '100:110,:'")
    out: list[Any] = []
    for part in (p.strip() for p in text.split(",")):
        bounds = part.split(":")
        if part == "...":
            if Ellipsis in out:
                raise ViewError(400, f"slice {text!r}: more than one '...'; {expected}")
            out.append(Ellipsis)
        elif _INT.fullmatch(part):
            out.append(int(part))
        elif 2 <= len(bounds) <= 3 and all(_INT.fullmatch(b.strip()) or not b.strip()
                                           for b in bounds):
            ints = [int(b) if b.strip() else None for b in bounds]
            if len(ints) == 3 and ints[2] == 0:
                raise ViewError(400, f"slice {text!r}: step 0 in {part!r}; {expected}")
            out.append(slice(*ints))
        else:
            raise ViewError(400, f"slice {text!r}: cannot read {part!r}; {expected}")
    return tuple(out)


def is_array(value: Any) -> bool:
    """True for numpy arrays and array-likes with a shape (not numpy scalars, not dicts)."""
    return isinstance(value, np.ndarray) or (
        not isinstance(value, np.generic | Mapping)
        and hasattr(value, "__array__") and hasattr(value, "shape"))


def describe(value: Any) -> dict[str, Any]:
    """An index entry: ``type`` and, where they apply, ``shape``, ``dtype``, ``keys``."""
    if isinstance(value, Mapping):
        return {"type": "dict", "keys": {str(k): describe(v) for k, v in value.items()}}
    if is_array(value) or isinstance(value, np.generic):
        return {"type": "array" if is_array(value) else "scalar",
                "shape": list(np.shape(value)), "dtype": str(np.asarray(value).dtype)}
    if isinstance(value, str):
        return {"type": "str"}
    if isinstance(value, list | tuple):
        return {"type": "list", "shape": [len(value)]}
    return {"type": "scalar"}


def select(state: Mapping[str, Any], segments: Sequence[str]) -> tuple[Any, str]:
    """Follow `segments` into `state`; a last segment after an array slices it.

    Returns
    -------
    value, path : object, str
        The value (a sliced array is a 0-d or larger array, never a numpy scalar, so one
        key serves one type) and its path for messages, e.g. ``"results/map[1:3,:]"``.

    Raises
    ------
    ViewError
        404 for an unknown key (listing those available) or a segment below a value
        that is neither a dict nor an array; 400 for a bad slice or one that does not
        fit the array.
    """
    value: Any = state
    path = "results"
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if isinstance(value, Mapping):
            if seg not in value:
                raise ViewError(404, f"{path}: no key {seg!r}; available: "
                                + (", ".join(repr(str(k)) for k in value) or "none"))
            value, path = value[seg], f"{path}/{seg}"
        elif last and is_array(value):
            index = parse_index(seg)
            try:
                value = np.asarray(np.asarray(value)[index])
            except (IndexError, OverflowError, ValueError) as err:
                raise ViewError(400, f"{path}: slice {seg!r} does not fit shape "
                                f"{tuple(np.shape(value))}: {err}") from err
            path = f"{path}[{seg}]"
        else:
            raise ViewError(404, f"{path}: no key {seg!r} in a {type(value).__name__}"
                            + (" (slices apply to arrays only)" if last else ""))
    return value, path


def npy_bytes(value: Any, path: str) -> bytes:
    """A copy of the array `value` in ``np.save`` format, without pickle."""
    buf = io.BytesIO()
    try:  # the copy makes the bytes one snapshot even if the source is written meanwhile
        np.save(buf, np.array(value, copy=True), allow_pickle=False)
    except ValueError as err:  # object arrays would need pickle
        raise ViewError(406, f"{path}: no .npy form without pickle ({err}); "
                        f"try ?format=json") from err
    return buf.getvalue()


def to_json(value: Any, path: str) -> Any:
    """`value` as JSON types; NaN and infinities become null (JSON has neither).

    Raises
    ------
    ViewError
        413 for an array over :data:`MAX_JSON_ELEMENTS`; 406 for a value with no JSON
        form (complex numbers, bytes, other objects).
    """
    if isinstance(value, Mapping):
        return {str(k): to_json(v, f"{path}/{k}") for k, v in value.items()}
    if is_array(value):
        arr = np.asarray(value)
        if arr.size > MAX_JSON_ELEMENTS:
            raise ViewError(413, f"{path}: {arr.size} elements is more than the "
                            f"{MAX_JSON_ELEMENTS} served as JSON; fetch it as .npy (no "
                            f"?format=json) or ask for a slice")
        if arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and np.isfinite(arr).all()):
            return arr.tolist()  # fast path: already JSON numbers
        return to_json(arr.tolist(), path)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, list | tuple):
        return [to_json(v, path) for v in value]
    raise ViewError(406, f"{path}: a {type(value).__name__} has no JSON form; "
                    f"fetch arrays as .npy (no ?format=json)")
