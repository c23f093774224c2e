"""Versioned parameters of a running scan: a small, thread-safe, append-only store.

Workers and the reducer read parameters (a threshold, a region of interest) that the user
may change while the scan runs: from Python, the dashboard or HTTP. Every change makes a
new version; all versions are kept (a scan sees a handful, not thousands), so each result
can name the version it was computed with and the NeXus file can record the whole history.
Values travel as JSON to workers and into files, so they must be JSON-able: numpy scalars
and arrays are converted to Python numbers and lists, anything else is refused.
"""

from __future__ import annotations

import copy
import logging
import math
import operator
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ValidationError

from framescope.errors import ParameterError

__all__ = ["Parameters", "Source", "jsonable"]

logger = logging.getLogger(__name__)

Source = Literal["python", "http", "dashboard"]
_SOURCES: tuple[str, ...] = get_args(Source)


def jsonable(value: Any, where: str = "value") -> Any:
    """Return `value` as plain JSON types (dict, list, str, int, float, bool, None).

    Parameters
    ----------
    value : object
        Nested dicts (str keys), lists, tuples, numbers, str, bool, None, numpy scalars
        and arrays.
    where : str
        The name used in errors, e.g. ``"parameter 'roi'"``.

    Returns
    -------
    object
        A new object made of JSON types only (tuples and arrays become lists).

    Raises
    ------
    ParameterError
        A value of another type, a non-str dict key, or a NaN/infinite float (JSON has
        neither).
    """
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"{where}: expected a finite number (JSON has no NaN or "
                                 f"Infinity), found {value!r}")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ParameterError(f"{where}: expected str keys, found key {k!r} "
                                     f"of type {type(k).__name__}")
            out[k] = jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ParameterError(f"{where}: expected a JSON-able value (number, str, bool, None, "
                         f"list, dict, numpy scalar or array), found {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Version:
    version: int
    time: str
    values: dict[str, Any]
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "time": self.time,
                "values": copy.deepcopy(self.values), "source": self.source}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _validation_message(err: ValidationError, model: type[BaseModel]) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(x) for x in e["loc"]) or "(all)"
        parts.append(f"field {field!r}: {e['msg']} (found {e.get('input')!r})")
    return f"parameters rejected by {model.__name__}: " + "; ".join(parts)


class Parameters:
    """A thread-safe, versioned parameter store for a running scan.

    Version 0 holds the initial values; each :meth:`update` merges its changes into the
    latest values and makes the next version. Past versions stay readable.

    Parameters
    ----------
    initial : mapping, optional
        The values of version 0 (JSON-able; numpy scalars and arrays are converted).
    model : pydantic.BaseModel subclass, optional
        When given, the merged values of every version are validated by it and stored as
        its JSON dump, so defaults are filled in and values normalised (``"3"`` → ``3``
        for an int field in pydantic's lax mode).

    Raises
    ------
    ParameterError
        The initial values are not JSON-able or the model rejects them.

    Examples
    --------
    >>> p = Parameters({"threshold": 5})
    >>> p.update(threshold=7)
    1
    >>> p.get(0), p.get()
    ({'threshold': 5}, {'threshold': 7})
    """

    def __init__(self, initial: Mapping[str, Any] | None = None,
                 model: type[BaseModel] | None = None) -> None:
        self._model = model
        self._lock = threading.Lock()
        # held while an update is applied *and* announced, so subscribers see versions in
        # order; re-entrant so a subscriber may itself update
        self._announce = threading.RLock()
        self._subscribers: list[Callable[[int, dict[str, Any]], None]] = []
        self._pending: deque[_Version] = deque()  # made, not yet announced
        self._announcing = False
        values = self._checked(dict(initial or {}))
        self._versions: list[_Version] = [_Version(0, _now(), values, "python")]

    def _checked(self, values: dict[str, Any]) -> dict[str, Any]:
        values = jsonable(values, "parameters")
        if self._model is None:
            return values
        try:
            return self._model.model_validate(values).model_dump(mode="json")
        except ValidationError as err:
            raise ParameterError(_validation_message(err, self._model)) from err

    @property
    def model(self) -> type[BaseModel] | None:
        """The pydantic model validating every version, or None."""
        return self._model

    @property
    def version(self) -> int:
        """The latest version number (0 before any update)."""
        with self._lock:
            return self._versions[-1].version

    def get(self, version: int | None = None) -> dict[str, Any]:
        """Return a copy of the values of `version` (default: the latest).

        Raises
        ------
        KeyError
            No such version (the message gives the range that exists).
        """
        with self._lock:
            n = len(self._versions)
            try:
                k = n - 1 if version is None else operator.index(version)
            except TypeError:
                k = -1
            if isinstance(version, bool) or not 0 <= k < n:
                raise KeyError(f"parameters: expected a version in 0..{n - 1}, "
                               f"found {version!r}")
            return copy.deepcopy(self._versions[k].values)

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """Return ``(version, values)`` of the latest version, read together."""
        with self._lock:
            last = self._versions[-1]
            return last.version, copy.deepcopy(last.values)

    def history(self) -> list[dict[str, Any]]:
        """Every version, oldest first, as ``{"version", "time", "values", "source"}``.

        ``time`` is ISO 8601 in UTC; ``source`` says who made the change (``"python"``,
        ``"http"`` or ``"dashboard"``).
        """
        with self._lock:
            return [v.as_dict() for v in self._versions]

    def update(self, changes: Mapping[str, Any] | None = None, *,
               source: Source = "python", **kw: Any) -> int:
        """Merge `changes` (and keyword changes) into the latest values: a new version.

        Parameters
        ----------
        changes : mapping, optional
            Names and new values; keywords add more (they win on a clash).
        source : {"python", "http", "dashboard"}
            Who makes the change; recorded in :meth:`history`.
        **kw
            More changes.

        Returns
        -------
        int
            The new version; the current one, unchanged, when there is nothing to change.

        Raises
        ------
        ParameterError
            A value is not JSON-able, or the model rejects the merged values (the message
            names the field, expected vs found); the version does not change.
        ValueError
            An unknown `source`.
        """
        if source not in _SOURCES:
            raise ValueError(f"parameters: expected source in {_SOURCES}, found {source!r}")
        delta = {**(changes or {}), **kw}
        with self._announce:
            with self._lock:
                if not delta:
                    return self._versions[-1].version
                merged = {**self._versions[-1].values, **jsonable(delta, "parameters")}
                # validated under the lock so two concurrent updates never both merge
                # into the same base version (models are quick)
                values = self._checked(merged)
                new = _Version(len(self._versions), _now(), values, source)
                self._versions.append(new)
            self._pending.append(new)
            if not self._announcing:  # else an update made by a subscriber: queued
                self._announce_pending()
            return new.version

    def _announce_pending(self) -> None:
        # called with self._announce held; a queue, not a loop per update, so an update
        # made inside a callback is announced to everyone after the current one
        self._announcing = True
        try:
            while self._pending:
                item = self._pending.popleft()
                with self._lock:
                    subscribers = list(self._subscribers)
                for callback in subscribers:
                    try:
                        callback(item.version, copy.deepcopy(item.values))
                    except Exception:
                        # the version is committed; one failing subscriber must not
                        # hide it from the others or from the caller
                        logger.exception("parameters: subscriber %r failed on version %d",
                                         callback, item.version)
        finally:
            self._announcing = False

    def subscribe(self, callback: Callable[[int, dict[str, Any]], None]
                  ) -> Callable[[], None]:
        """Call ``callback(version, values)`` after each update, in version order.

        The callback runs in the updating thread and further updates wait for it, so keep
        it quick (hand the values to a queue or socket). An update it makes itself is
        announced after every subscriber has seen the current version. Its exceptions are
        logged, not raised: the version it was told of is already made.

        Returns
        -------
        callable
            Call it to unsubscribe.
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def __repr__(self) -> str:
        with self._lock:
            last = self._versions[-1]
        return f"Parameters(version={last.version}, values={last.values!r})"
