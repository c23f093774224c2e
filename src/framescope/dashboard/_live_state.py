"""The dashboard's state for a live series: results grow with the frames that arrive.

Same detectors, views and jobs as offline (:class:`DashboardState`). The series' stream
job (:func:`framescope.submit` on the source) computes the mean and max frame and every
detector, COM and phase setting that existed when the series started;
:meth:`LiveState.refresh` (called a few times a second) shows what it has merged. A
detector drawn or edited since, a COM or phase setting changed, a picked frame or an ROI
sum are computed by the engine over the in-memory frames of a
:class:`~framescope.dashboard._store.FrameStore`, extended over the positions that arrive.
No result is cached: the frames change under them.

The store keeps the frames as they arrived; everything computed or shown from them here
applies the corrections the job applies to the series (the header's detector mask, the dark
of a dark series; :meth:`framescope.engine.Job.corrections`), so the frame view, the images
computed here and the job's images agree pixel for pixel.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import numpy as np
import param
import xarray as xr

from framescope.corrections import Corrections, plan_for, with_corrections
from framescope.dashboard._phase_methods import PHASE_METHODS
from framescope.dashboard._results import ComResult, Frame, PhaseResult
from framescope.dashboard._state import DashboardState, summary_udfs
from framescope.dashboard._store import FrameStore
from framescope.engine import INLINE, Job
from framescope.errors import MaskError
from framescope.masks import MaskStack
from framescope.udf import ApplyMasks, CenterOfMass, SumFrame
from framescope.udf._base import UDF

__all__ = ["CARRIED", "LiveState", "carried_settings", "stream_udfs"]

log = logging.getLogger(__name__)

#: settings the next series' state takes over (the COM and Phase tabs' choices)
CARRIED = ("com_enabled", "com_cy", "com_cx", "com_radius", "com_rotation", "com_flip_y",
           "phase_enabled", "phase_method", "phase_component", "phase_defocus",
           "phase_highpass")


def carried_settings(state: DashboardState) -> dict[str, Any]:
    """The settings of ``state`` a new series starts with (:data:`CARRIED`), so that the
    stream job's COM and phase, updated to them, are the ones the new series shows."""
    return {name: getattr(state, name) for name in CARRIED}


def _series_corrections(job: Job | None, series: int | None, raw: tuple[int, ...],
                        ) -> Corrections | None:
    """The job's corrections of ``series``, if they keep the frame grid (the views show
    frames of the raw shape)."""
    c = None if job is None or series is None else job.corrections(series)
    if c is not None and c.output_shape(tuple(raw)) != tuple(raw):
        log.warning("live view: series %s: corrections that crop or bin the frames are not "
                    "shown; the views use the raw frames", series)
        return None
    return c


def stream_udfs(state: DashboardState | None, detectors: Any = None) -> dict[str, UDF]:
    """The live dashboard's analyses as one stream job's UDFs: ``sum`` and ``max`` frames,
    ``vd`` (the valid detectors of ``state``, else ``detectors``), ``com`` and ``phase`` if
    enabled."""
    udfs: dict[str, UDF] = dict(summary_udfs())
    try:
        stack = state.masks() if state is not None else (
            None if detectors is None else MaskStack.from_any(detectors))
    except (MaskError, TypeError, ValueError):  # one is being drawn: the last good set
        stack = None
    if stack is not None and len(stack):
        udfs["vd"] = ApplyMasks(stack)
    if state is not None and state.com_enabled:
        with contextlib.suppress(ValueError):  # half-typed settings: none this series
            udfs["com"] = CenterOfMass(**state.com_params())
    if state is not None and state.phase_enabled:
        with contextlib.suppress(ValueError):  # not for this calibration: the tab says why
            udfs["phase"] = state.phase_udf()
    return udfs


class LiveState(DashboardState):
    """Detectors and results of the live dashboard for one series of ``store``."""

    def __init__(self, store: FrameStore, detectors: Any = None, job: Job | None = None,
                 **params: Any) -> None:
        self.store, self.job = store, job
        self._lock = threading.Lock()
        self._received: np.ndarray | None = None
        self._job_done = -1  # positions the job had merged at the last refresh
        # per detector: (mask key, image, positions in it)
        self._live: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
        self._sum: tuple[np.ndarray, np.ndarray, int, np.ndarray] | None = None
        arr = store.array()
        #: the corrections of the job for this series (None: raw frames)
        self.corrections = _series_corrections(job, store.series, arr.shape[2:])
        if self.corrections is not None:
            arr = with_corrections(arr, self.corrections)
        super().__init__(arr, client=INLINE, detectors=detectors, **params)
        self._received = np.zeros(self.scan_shape, dtype=bool)

    def start(self) -> None:
        """Nothing to compute before frames arrive (see :meth:`refresh`)."""
        self.refresh()

    def refresh(self) -> bool:
        """Show the stream job's results and extend the others over newly arrived
        positions; False when nothing changed."""
        received = self.store.received()
        if received is None or received.shape != self.scan_shape or self._received is None:
            return False
        parts = self._job_results()
        done = -1 if parts is None else int(next(iter(parts.values()))["done"].sum())
        if np.array_equal(received, self._received) and done == self._job_done:
            return False
        self._received, self._job_done = received, done
        taken = set() if parts is None else self._from_job(parts)
        busy = set(self.jobs.busy())  # a running job is extended by the next refresh
        self._submit_images([d for d in self.detectors
                             if f"vi:{d.name}" not in busy and d.name not in taken])
        if "summary" not in busy and "summary" not in taken:
            self._start_summary()
        if self.com_enabled and "com" not in busy and "com" not in taken:
            self._refresh_com()
        if self.phase_enabled and "phase" not in busy and "phase" not in taken:
            self._refresh_phase()
        if self.frame_mode in ("picked", "roi") and "frame" not in busy:
            self._refresh_frame()
        return True

    @property
    def received(self) -> np.ndarray:
        """Positions the results are being extended over (bool, scan shape)."""
        return self._received if self._received is not None else np.zeros(self.scan_shape,
                                                                            dtype=bool)

    # ---- the stream job's results ---------------------------------------------------------
    def _job_results(self) -> dict[str, xr.Dataset] | None:
        """The job's results for this series (None without a job, or on another series)."""
        parts = None if self.job is None else self.job.partial()
        if not isinstance(parts, dict) or not parts:
            return None
        if next(iter(parts.values())).attrs.get("series") != self.store.series:
            return None
        return parts

    def _from_job(self, parts: dict[str, xr.Dataset]) -> set[str]:
        """Show what the job computes for this series; the names it covered."""
        udfs = self.job.udfs
        taken: set[str] = set()
        received = self.received
        done = np.asarray(parts["sum"]["done"], dtype=bool)
        fraction = float(done[received].mean()) if received.any() else 0.0
        with self._lock:
            self._sum = (np.asarray(parts["sum"]["sum"]), np.asarray(parts["max"]["max"]),
                         int(parts["sum"]["n"]), done)
        taken.add("summary")
        if self.frame_mode in ("mean", "max"):
            self._show_summary(self.frame_mode)
        vd = udfs.get("vd")
        if isinstance(vd, ApplyMasks):
            self._seq += 1
            for det in self.detectors:
                try:
                    key = det.spec().key
                except MaskError:
                    continue
                if det.name not in vd.masks or vd.masks[det.name].key != key:
                    continue  # drawn or edited since the series started: computed here
                image = np.asarray(parts["vd"]["intensity"].sel(mask=det.name),
                                   dtype=np.float32)
                with self._lock:
                    self._live[det.name] = (key, image, done)
                self.jobs.cancel(f"vi:{det.name}")
                self.results.set_progress(f"vi:{det.name}", fraction)
                self._put_image(det.name, image, fraction, key, self._seq)
                taken.add(det.name)
        com = udfs.get("com")
        if self.com_enabled and com is not None:
            try:
                same = CenterOfMass(**self.com_params()).key == com.key
            except ValueError:
                same = False
            if same:
                self.jobs.cancel("com")
                self.results.set_progress("com", fraction)
                self.results.put("com", ComResult(parts["com"], fraction))
                taken.add("com")
        phase = udfs.get("phase")
        if self.phase_enabled and phase is not None and "phase" in parts:
            try:
                settings = self.phase_settings()
                same = PHASE_METHODS[self.phase_method].make(settings).key == phase.key
            except ValueError:
                same = False
            if same:
                self.jobs.cancel("phase")
                self.results.set_progress("phase", fraction)
                self.results.put("phase", PhaseResult(self.phase_method, parts["phase"],
                                                      fraction))
                taken.add("phase")
        return taken

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

    def _show_summary(self, mode: str) -> None:
        """The mean or max of the frames arrived so far, with their number."""
        self.jobs.cancel("frame")
        with self._lock:
            kept = self._sum
        if kept is not None and kept[2]:
            total, peak, n, _ = kept
            frame = total / n if mode == "mean" else peak
            self.results.put("frame", Frame(mode, frame, f"{mode} of {n} frames", 1.0))

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
            frame = (self._corrected(data[y, x]) if arrived and data is not None
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

    def _corrected(self, frame: np.ndarray) -> np.ndarray:
        """One stored (raw) frame as the analyses see it (float64)."""
        c = self.corrections
        if c is None:
            return np.array(frame, dtype=np.float64)
        return plan_for(c, self.det_shape, "numpy").apply(frame[None])[0].astype(np.float64)

    # ---- phase ------------------------------------------------------------------------------
    def _phase_roi(self) -> np.ndarray:
        """The arrived positions: the phase is recomputed over them as they grow."""
        return self.received.copy()

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
