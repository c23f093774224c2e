"""What users subclass: a worker (one event → a result) and a reducer (results in order)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from framescope.events._former import Event

__all__ = ["EventWorker", "Reducer", "Result"]


class EventWorker:
    """Turns one event into a result. Subclass and override :meth:`process_event`.

    A new instance is made per real worker per scan, so attributes are per-worker state:
    with a stateful trigger map (one virtual worker for consecutive events) an instance sees
    those events in order.

    Parameters
    ----------
    parameters : dict
        The scan's parameters when the worker starts.
    context : dict
        ``index`` (this worker's number), ``n_workers``, ``streams`` (names), ``headers``
        (each stream's series header fields, filled as they arrive).
    """

    def __init__(self, parameters: dict[str, Any], context: dict[str, Any]) -> None:
        self.parameters = parameters
        self.context = context

    def process_event(self, event: Event, parameters: dict[str, Any]) -> Any:
        """The result of ``event`` (numbers, strings, numpy arrays, lists and dicts of
        them; None for nothing). ``parameters`` are the version the event was sent with."""
        raise NotImplementedError(f"{type(self).__name__}.process_event")

    def finish(self, parameters: dict[str, Any]) -> None:
        """Called once after the last event of the scan."""


@dataclass(slots=True)
class Result:
    """What a reducer gets for each event, in event order.

    Attributes
    ----------
    event : int
    value : Any
        What ``process_event`` returned (None when it raised: see ``error``).
    complete : bool
        Every frame of the event came; else ``reason`` and ``missing`` say what did not.
    parameters_version : int
    worker : int
        The real worker that computed it.
    """

    event: int
    value: Any
    complete: bool = True
    reason: str = ""
    missing: dict[str, list[int]] = field(default_factory=dict)
    parameters_version: int = 0
    worker: int = 0
    error: str | None = None


class Reducer:
    """Takes results in event order and holds what it publishes. Subclass and override
    :meth:`process_result`; put what should be seen (over HTTP, in the dashboard, in the
    NeXus file) in ``self.publish`` (a dict of numpy arrays, numbers, strings, lists).

    A new instance is made per scan; it runs on one thread, so it needs no locks.

    Parameters
    ----------
    parameters : dict
    context : dict
        ``streams``, ``n_workers``, ``trigger_map``.
    """

    def __init__(self, parameters: dict[str, Any], context: dict[str, Any]) -> None:
        self.parameters = parameters
        self.context = context
        self.publish: dict[str, Any] = {}

    def process_result(self, result: Result, parameters: dict[str, Any]) -> None:
        """Fold one result into :attr:`publish`."""
        raise NotImplementedError(f"{type(self).__name__}.process_result")

    def finish(self, parameters: dict[str, Any]) -> None:
        """Called once after the last result of the scan."""
