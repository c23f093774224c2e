"""The dashboard's state for a live series: results grow with the frames that arrive.

Same detectors, views and jobs as offline (:class:`DashboardState`), on the in-memory
frames of a :class:`~framescope.dashboard._store.FrameStore`. :meth:`LiveState.refresh`
(called a few times a second) extends every result over the positions that arrived since
it last ran, with the same UDFs through the engine; a detector edit recomputes its image
over all arrived positions. No result is cached: the frames change under them.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import param
import xarray as xr

from framescope.dashboard._results import ComResult, Frame
from framescope.dashboard._state import DashboardState, summary_udfs
from framescope.dashboard._store import FrameStore
from framescope.engine import INLINE
from framescope.errors import MaskError
from framescope.masks import MaskStack
from framescope.udf import ApplyMasks, CenterOfMass, SumFrame

__all__ = ["LiveState"]


class LiveState(DashboardState):
    """Detectors and results of the live dashboard for one series of ``store``."""

    def __init__(self, store: FrameStore, detectors: Any = None, **params: Any) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._received: np.ndarray | None = None
        # per detector: (mask key, image, positions in it)
        self._live: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        self._sum: tuple[np.ndarray, np.ndarray, int, np.ndarray] | None = None
        super().__init__(store.array(), client=INLINE, detectors=detectors, **params)
        self._received = np.zeros(self.scan_shape, dtype=bool)

    def start(self) -> None:
        """Nothing to compute before frames arrive (see :meth:`refresh`)."""
        self.refresh()

    def refresh(self) -> bool:
        """Extend the results over newly arrived positions; False when none arrived."""
        received = self.store.received()
        if received is None or received.shape != self.scan_shape or self._received is None:
            return False
        if np.array_equal(received, self._received):
            return False
        self._received = received
        busy = set(self.jobs.busy())  # a running job is extended by the next refresh
        self._submit_images([d for d in self.detectors if f"vi:{d.name}" not in busy])
        if "summary" not in busy:
            self._start_summary()
        if self.com_enabled and "com" not in busy:
            self._refresh_com()
        if self.frame_mode in ("picked", "roi") and "frame" not in busy:
            self._refresh_frame()
        return True

    @property
    def received(self) -> np.ndarray:
        """Positions the results are being extended over (bool, scan shape)."""
        return self._received if self._received is not None else np.zeros(self.scan_shape,
                                                                            dtype=bool)

    # ---- virtual images -----------------------------------------------------------------
    def _submit_images(self, dets: Any, channel: str | None = None) -> None:
        self._seq += 1
        seq, received = self._seq, self.received
        for det in dets:
            try:
                spec = det.spec()
                spec.rasterize(self.det_shape)
            except MaskError as exc:
                self.status = f"{det.name}: {exc}"
                self.jobs.cancel(f"vi:{det.name}")
                continue
            with self._lock:
                key, image, covered = self._live.get(det.name, ("", None, None))
                if key != spec.key:  # a new mask: its image starts over
                    image = np.full(self.scan_shape, np.nan, dtype=np.float32)
                    covered = np.zeros(self.scan_shape, dtype=bool)
                    self._live[det.name] = (spec.key, image, covered)
            roi = received & ~covered
            if not roi.any():
                continue
            stack = MaskStack({det.name: spec})
            self.jobs.submit(
                f"vi:{det.name}",
                lambda stack=stack, roi=roi: self._iter_run(ApplyMasks(stack), roi=roi),
                lambda ds, name=det.name, key=spec.key, roi=roi: self._on_live_image(
                    name, key, roi, seq, ds),
                self._on_error)

    def _on_live_image(self, name: str, key: str, roi: np.ndarray, seq: int,
                       ds: xr.Dataset) -> None:
        done = np.asarray(ds["done"], dtype=bool) & roi
        values = np.asarray(ds["intensity"].sel(mask=name), dtype=np.float32)
        with self._lock:
            current = self._live.get(name)
            if current is None or current[0] != key:
                return  # the detector changed meanwhile
            image = np.where(done, values, current[1])
            covered = current[2] | done
            self._live[name] = (key, image, covered)
        fraction = float(covered[self.received].mean()) if self.received.any() else 0.0
        self.results.set_progress(f"vi:{name}", fraction)
        self._put_image(name, image, fraction, key, seq)

    # ---- detector-view frame -------------------------------------------------------------
    def summary(self, which: str) -> np.ndarray | None:
        """The mean or max frame of the arrived frames (None before any)."""
        with self._lock:
            if self._sum is None or self._sum[2] == 0:
                return None
            total, peak, n, _ = self._sum
        return total / n if which == "mean" else peak

    def _start_summary(self) -> None:
        with self._lock:
            if self._sum is None:
                h, w = self.det_shape
                self._sum = (np.zeros((h, w)), np.full((h, w), -np.inf), 0,
                             np.zeros(self.scan_shape, dtype=bool))
            roi = self.received & ~self._sum[3]
        if roi.any():
            self.jobs.submit("summary", lambda: self._iter_run(summary_udfs(), roi=roi),
                             lambda parts: self._on_live_summary(roi, parts), self._on_error)

    def _on_live_summary(self, roi: np.ndarray, parts: dict[str, xr.Dataset]) -> None:
        finished = bool(np.asarray(parts["sum"]["done"], dtype=bool)[roi].all())
        with self._lock:
            total, peak, n, covered = self._sum
            total = total + np.asarray(parts["sum"]["sum"])
            peak = np.maximum(peak, np.asarray(parts["max"]["max"]))
            n = n + int(parts["sum"]["n"])
            if finished:  # partial sums are not kept: the next refresh redoes them
                self._sum = (total, peak, n, covered | roi)
        if self.frame_mode in ("mean", "max") and n:
            mode = self.frame_mode
            frame = total / n if mode == "mean" else peak
            self.results.put("frame", Frame(mode, frame, f"{mode} of {n} frames", 1.0))

    @param.depends("frame_mode", "picked", "roi", watch=True)
    def _refresh_frame(self) -> None:
        self._frame_token += 1
        mode = self.frame_mode
        if mode in ("mean", "max"):
            self._show_summary(mode)
            return
        if mode == "picked":
            y, x = (int(v) for v in self.picked)
            data = self.store.data
            arrived = bool(self.received[y, x])
            frame = (np.array(data[y, x], dtype=np.float64) if arrived and data is not None
                     else np.zeros(self.det_shape))
            note = "" if arrived else " (not received yet)"
            self.results.put("frame", Frame(mode, frame, f"frame at scan (y={y}, x={x}){note}",
                                            1.0))
            return
        if self.roi is None:
            self.status = "draw a box or polygon ROI on the scan view"
            return
        roi = np.asarray(self.roi, dtype=bool) & self.received
        token = self._frame_token
        if not roi.any():
            self.results.put("frame", Frame(mode, np.zeros(self.det_shape),
                                            "ROI: no frame received there yet", 1.0))
            return

        def on_update(ds: xr.Dataset) -> None:
            fraction = float(np.asarray(ds["done"])[roi].mean())
            if token == self._frame_token:
                self.results.put("frame", Frame(mode, np.asarray(ds["sum"]),
                                                f"ROI sum of {int(roi.sum())} frames",
                                                fraction))

        self.jobs.submit("frame", lambda: self._iter_run(SumFrame(), roi=roi), on_update,
                         self._on_error)

    # ---- centre of mass -----------------------------------------------------------------
    @param.depends("com_enabled", "com_cy", "com_cx", "com_radius", "com_rotation",
                   "com_flip_y", watch=True)
    def _refresh_com(self) -> None:
        if not self.com_enabled or not self.received.any():
            return
        try:
            udf = CenterOfMass(**self.com_params())
        except ValueError as exc:
            self.status = f"COM: {exc}"
            return
        roi = self.received.copy()

        def on_update(ds: xr.Dataset) -> None:
            fraction = float(np.asarray(ds["done"])[roi].mean())
            self.results.set_progress("com", fraction)
            self.results.put("com", ComResult(ds, fraction))

        self.jobs.submit("com", lambda: self._iter_run(udf, roi=roi), on_update,
                         self._on_error)
