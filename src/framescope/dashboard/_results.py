"""The latest results of the dashboard's jobs, handed from job threads to the display loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["ComResult", "Frame", "PhaseResult", "Results", "VirtualImage"]


@dataclass(frozen=True, slots=True)
class VirtualImage:
    """A virtual image so far: NaN where no value has been computed yet.

    ``done`` is the fraction of scan positions computed for ``spec_key`` (the mask now
    shown); positions not done yet may still hold the image of the previous mask.
    """

    name: str
    image: np.ndarray
    done: float
    spec_key: str


@dataclass(frozen=True, slots=True)
class Frame:
    """The detector view's frame: ``mode`` (mean/max/picked/roi) and a title; ``at``, the
    scan position (y, x) of a picked frame, for titles in the displayed units."""

    mode: str
    image: np.ndarray
    label: str
    done: float
    at: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class ComResult:
    """Centre-of-mass maps so far (``framescope.udf.CenterOfMass`` outputs)."""

    data: xr.Dataset
    done: float


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """The phase tab's image so far: the Dataset of ``method``'s UDF (None with a
    ``message`` saying why it cannot run, e.g. the calibration it lacks)."""

    method: str
    data: xr.Dataset | None
    done: float
    message: str = ""


class Results:
    """Latest result per key (``vi:<name>``, ``frame``, ``com``, ``phase``); thread-safe.

    Job threads :meth:`put` as often as partitions complete; the display loop
    :meth:`take`\\ s only what changed since its last call, so however fast results arrive
    each key costs at most one browser update per display tick.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._progress: dict[str, float] = {}
        #: called (in the job's thread) after every put/drop: the display loop's wake-up
        self.listener: Callable[[], None] | None = None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._dirty.add(key)
        self._notify()

    def _notify(self) -> None:
        listener = self.listener
        if listener is not None:
            listener()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._items.get(key, default)

    def drop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._progress.pop(key, None)
            self._dirty.add(key)
        self._notify()

    def take(self) -> dict[str, Any]:
        """Changed items since the last call (a dropped key maps to None)."""
        with self._lock:
            out = {k: self._items.get(k) for k in self._dirty}
            self._dirty.clear()
            return out

    def set_progress(self, channel: str, fraction: float) -> None:
        with self._lock:
            self._progress[channel] = fraction

    def progress(self) -> dict[str, float]:
        """Completed fraction of the latest job of every channel."""
        with self._lock:
            return dict(self._progress)
