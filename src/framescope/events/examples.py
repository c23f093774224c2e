"""Built-in workers and reducers for the common beamline cases (and as templates).

- :class:`VirtualImageOverI0` + :class:`ImageReducer`: a virtual detector (framescope's
  :class:`~framescope.udf.ApplyMasks`) on each event's frames, normalised by the I0 counter
  of the same frames, placed on a scan grid by event number.
- :class:`VirtualImageOverI0` + :class:`ScatterMapReducer`: the same values placed by motor
  positions that do not form a grid (scattered points binned into an image).
- :class:`ShiftWorker` + :class:`ShiftReducer`: a stateful worker measuring the shift of each
  frame against the previous event's frame (drift, image alignment); give it a stateful
  trigger map so it sees consecutive events.

Parameters (JSON, changeable during the scan): ``detector``, ``i0``, ``positions`` (stream
names); ``masks`` (``{name: mask.to_dict()}``); ``scan`` (``[ny, nx]``); ``extent``
(``[x0, x1, y0, y1]``) and ``bins`` (``[ny, nx]``) of a scatter map.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from framescope.corrections import Corrections, corrected_meta
from framescope.engine import run_frames
from framescope.events._classes import EventWorker, Reducer, Result
from framescope.events._former import Event
from framescope.masks import MaskSpec
from framescope.udf import UDF, ApplyMasks, Meta

__all__ = ["ImageReducer", "ScatterMapReducer", "ShiftReducer", "ShiftWorker",
           "VirtualImageOverI0", "analyse"]


def analyse(udf: UDF, frames: np.ndarray, *, corrections: Corrections | None = None,
            calibration: Any = None) -> dict[str, np.ndarray]:
    """Run a framescope UDF on frames in memory: its per-frame results, ``(n, ...)`` each.

    For use inside a worker: ``analyse(ApplyMasks(masks), event["detector"])``, or
    ``analyse(CenterOfMass(), frames, corrections=corr)`` (dark, gain, mask, binning applied
    first, as in every framescope run).
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    n = len(frames)
    meta = corrected_meta(Meta((1, n), frames.shape[1:], frames.dtype,
                               calibration=calibration), corrections)
    part = run_frames(udf, frames, np.arange(n), meta)
    return {k: v.reshape(n, *v.shape[1:]) if v.shape[:1] == (n,) else v
            for k, v in part.nav.items()}


def _values(event: Event, stream: str, field: str) -> np.ndarray:
    return np.array([f.data[field] for f in event.streams.get(stream, ())], dtype="f8")


class VirtualImageOverI0(EventWorker):
    """Virtual-detector intensities of the event's detector frames, each divided by the I0
    reading of the same frame number, averaged over the event's frames.

    Returns ``{"intensity": (k,) per mask, "i0": mean I0}``, plus ``x``, ``y`` (the
    positions stream's reading) when ``parameters["positions"]`` names a stream; None for
    an incomplete event.
    """

    def __init__(self, parameters: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__(parameters, context)
        self._udf: tuple[Any, ApplyMasks] | None = None

    def _masks(self, parameters: Mapping[str, Any]) -> ApplyMasks:
        masks = parameters["masks"]
        if self._udf is None or self._udf[0] != masks:  # new masks: a new matrix
            specs = {name: MaskSpec.from_dict(m) for name, m in masks.items()}
            self._udf = (masks, ApplyMasks(specs))
        return self._udf[1]

    def process_event(self, event: Event, parameters: dict[str, Any]) -> Any:
        if not event.complete:
            return None
        det = event[parameters.get("detector", "detector")]
        udf = self._masks(parameters)
        intensity = analyse(udf, det)["intensity"]  # (frames, masks)
        i0 = _values(event, parameters.get("i0", "i0"), "i0")
        if len(i0) != len(intensity):
            raise ValueError(f"event {event.number}: {len(intensity)} detector frames but "
                             f"{len(i0)} I0 readings")
        out = {"intensity": (intensity / i0[:, None]).mean(0), "i0": float(i0.mean())}
        positions = parameters.get("positions")
        if positions:
            pos = event[positions]
            out["x"], out["y"] = float(pos["x"]), float(pos["y"])
        return out


class ImageReducer(Reducer):
    """Per-mask images on the scan grid ``parameters["scan"]``: event n is flat position n.

    Publishes ``image`` (masks, ny, nx; NaN until filled), ``masks`` (names), ``done``
    (ny, nx bool), ``incomplete`` (count) and ``i0`` (ny, nx).
    """

    def __init__(self, parameters: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__(parameters, context)
        ny, nx = parameters["scan"]
        names = list(parameters["masks"])
        self.publish.update(image=np.full((len(names), ny, nx), np.nan), masks=names,
                            done=np.zeros((ny, nx), bool), i0=np.full((ny, nx), np.nan),
                            incomplete=0)

    def process_result(self, result: Result, parameters: dict[str, Any]) -> None:
        p = self.publish
        ny, nx = p["done"].shape
        if result.event >= ny * nx:
            return
        y, x = divmod(result.event, nx)
        if result.value is None:
            p["incomplete"] += 1
            return
        p["image"][:, y, x] = result.value["intensity"]
        p["i0"][y, x] = result.value["i0"]
        p["done"][y, x] = True


class ScatterMapReducer(Reducer):
    """Scattered positions binned into a map: ``parameters["extent"]`` ``[x0, x1, y0, y1]``
    and ``bins`` ``[ny, nx]``. Publishes ``sum`` (masks, ny, nx), ``hits`` (ny, nx),
    ``map`` (sum / hits, NaN where no point fell), ``outside`` (points off the extent),
    ``x``/``y`` bin edges."""

    def __init__(self, parameters: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__(parameters, context)
        ny, nx = parameters["bins"]
        k = len(parameters["masks"])
        x0, x1, y0, y1 = parameters["extent"]
        self.publish.update(sum=np.zeros((k, ny, nx)), hits=np.zeros((ny, nx), np.int64),
                            map=np.full((k, ny, nx), np.nan), outside=0, incomplete=0,
                            x=np.linspace(x0, x1, nx + 1), y=np.linspace(y0, y1, ny + 1))

    def process_result(self, result: Result, parameters: dict[str, Any]) -> None:
        p = self.publish
        if result.value is None:
            p["incomplete"] += 1
            return
        ny, nx = p["hits"].shape
        x0, x1, y0, y1 = parameters["extent"]
        # the same rule as numpy.histogram2d: half-open bins, the last one closed
        ix = _bin(result.value["x"], x0, x1, nx)
        iy = _bin(result.value["y"], y0, y1, ny)
        if ix is None or iy is None:
            p["outside"] += 1
            return
        p["sum"][:, iy, ix] += result.value["intensity"]
        p["hits"][iy, ix] += 1
        p["map"][:, iy, ix] = p["sum"][:, iy, ix] / p["hits"][iy, ix]


def _bin(v: float, lo: float, hi: float, n: int) -> int | None:
    if not lo <= v <= hi:
        return None
    return min(int((v - lo) / (hi - lo) * n), n - 1)


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The shift ``(dy, dx)`` that moves ``a`` onto ``b``: phase correlation, sub-pixel from
    the peak and its larger neighbour (Foroosh et al. 2002: the peak of a shifted
    correlation is a sinc, so ``d = c1 / (c1 + c0)``)."""
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    cross = fb * np.conj(fa)
    cross /= np.maximum(np.abs(cross), 1e-12)
    corr = np.fft.irfft2(cross, a.shape)
    peak = np.unravel_index(np.argmax(corr), corr.shape)
    c0 = corr[peak]
    out = []
    for axis, n in enumerate(a.shape):
        p = int(peak[axis])
        side = []
        for d in (-1, 1):
            idx = list(peak)
            idx[axis] = (p + d) % n
            side.append(corr[tuple(idx)])
        frac = side[1] / (side[1] + c0) if side[1] >= side[0] else -side[0] / (side[0] + c0)
        s = p + frac
        out.append(float(s - n if s > n / 2 else s))
    return out[0], out[1]


class ShiftWorker(EventWorker):
    """Stateful: the shift of each event's (first) detector frame against the previous
    event's frame this worker saw; ``{"shift": [dy, dx], "previous": event number}``
    (``previous`` None for the first). Needs consecutive events: a stateful map."""

    def __init__(self, parameters: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__(parameters, context)
        self._last: tuple[int, np.ndarray] | None = None

    def process_event(self, event: Event, parameters: dict[str, Any]) -> Any:
        if not event.complete:
            return None
        frames = event.streams[parameters.get("detector", "detector")]
        frame = np.asarray(frames[0].data, dtype="f8")
        if self._last is None:
            shift, previous = [0.0, 0.0], None
        else:
            previous = self._last[0]
            shift = list(phase_shift(self._last[1], frame))
        self._last = (event.number, frame)
        return {"shift": shift, "previous": previous}


class ShiftReducer(Reducer):
    """Collects the shifts in event order: ``shift`` (n, 2) with NaN for incomplete events,
    ``drift`` (the running sum, NaN counted as 0), ``previous`` (which event each was
    measured against)."""

    def __init__(self, parameters: dict[str, Any], context: dict[str, Any]) -> None:
        super().__init__(parameters, context)
        # rows in buffers that double when full: each result costs O(1), not a copy of all
        self._shift = np.empty((64, 2))
        self._drift = np.empty((64, 2))
        self._n = 0
        self.publish.update(shift=self._shift[:0], drift=self._drift[:0], previous=[])

    def process_result(self, result: Result, parameters: dict[str, Any]) -> None:
        v = result.value
        n = self._n
        if n == len(self._shift):
            self._shift = np.concatenate([self._shift, np.empty_like(self._shift)])
            self._drift = np.concatenate([self._drift, np.empty_like(self._drift)])
        self._shift[n] = v["shift"] if v else (np.nan, np.nan)
        before = self._drift[n - 1] if n else 0.0
        self._drift[n] = before + np.nan_to_num(self._shift[n])
        self._n = n + 1
        self.publish["shift"], self.publish["drift"] = self._shift[: n + 1], self._drift[: n + 1]
        self.publish["previous"].append(v["previous"] if v else None)
