"""The dashboard's model: detectors, display choices and the jobs that keep results current.

No panel or holoviews here: the state is a ``param.Parameterized`` store that views watch
and that tests drive directly. Every edit starts the job it needs in a latest-wins channel
(:class:`~framescope.dashboard._jobs.JobManager`); the jobs publish progressive results to
:class:`~framescope.dashboard._results.Results`, which the display loop drains.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import param
import xarray as xr

from framescope.dashboard._data import current_client, in_memory
from framescope.dashboard._detectors import (
    BoxDetector,
    Detector,
    DiskDetector,
    PolygonDetector,
    RingDetector,
    centroid,
    default_detectors,
    detector_from_spec,
    next_color,
    unique_name,
)
from framescope.dashboard._images import bright_field_disk
from framescope.dashboard._jobs import JobManager
from framescope.dashboard._results import Frame, Results, VirtualImage
from framescope.dashboard._state_analyses import ScanAnalyses
from framescope.dashboard._units import UNITS, DisplayUnits, calibration_of, display_units
from framescope.engine import INLINE, get_client, iter_run
from framescope.engine._cache import data_key, results, roi_key
from framescope.errors import MaskError
from framescope.masks import MaskStack
from framescope.udf import ApplyMasks, MaxFrame, SumFrame

__all__ = ["FRAME_MODES", "DashboardState"]

log = logging.getLogger(__name__)

FRAME_MODES = ("mean", "max", "picked", "roi")
#: partial virtual images are shown once a job has run this long (s)
PARTIAL_AFTER_S = 0.1
_SUMMARY = "dashboard.frame_summary"
_ROI_SUM = "dashboard.sum_frame"


def summary_udfs() -> dict[str, Any]:
    """The detector view's mean and max frame: two UDFs, one pass over the data."""
    return {"sum": SumFrame(), "max": MaxFrame()}


def _fraction(done: xr.DataArray) -> float:
    return float(np.asarray(done).mean())


class DashboardState(ScanAnalyses):
    """Detectors, frame choice, ROI and COM settings of one dashboard, and its jobs."""

    detectors = param.List(default=[], item_type=Detector, doc="Virtual detectors, in order")
    selected = param.String(default="", doc="Name of the detector being edited")
    frame_mode = param.Selector(default="mean", objects=list(FRAME_MODES),
                                doc="Frame in the detector view")
    picked = param.Tuple(default=(0, 0), length=2, doc="Picked scan position (y, x)")
    roi = param.Array(default=None, allow_None=True, doc="Scan ROI (bool, scan shape)")
    units = param.Selector(default="px", objects=list(UNITS), doc=(
        "Units of the axes, number fields and readouts: px, or physical (detector in mrad "
        "from the beam centre, scan in nm) for a calibrated array. Only the display: "
        "geometry, ROI and masks stay in pixels"))
    shapes = param.Event(doc="A detector was added, removed, moved or restyled")
    status = param.String(default="", doc="Last message for the user")

    def __init__(self, arr: xr.DataArray, client: Any = None,
                 detectors: Any = None, **params: Any) -> None:
        arr.fs  # noqa: B018  (checks the dims, raises DimensionError)
        self.scan_shape: tuple[int, int] = (arr.sizes["scan_y"], arr.sizes["scan_x"])
        self.det_shape: tuple[int, int] = (arr.sizes["det_y"], arr.sizes["det_x"])
        #: the array's calibration (``attrs["calibration"]``), None without one
        self.calibration = calibration_of(arr.attrs)
        #: whether physical units can be shown (detector angle or scan step known)
        self.calibrated = display_units(self.calibration, self.det_shape).labelled
        if self.calibrated:
            params.setdefault("units", "physical")
        if self.calibration is not None:  # DPC starts from the calibration's scan rotation
            params.setdefault("com_rotation", math.degrees(self.calibration.rotation))
            params.setdefault("com_flip_y", self.calibration.flip)
        super().__init__(**params)
        self.arr = in_memory(arr)
        self.client = get_client(client)
        self.data_key = data_key(arr)
        self.results = Results()
        self.jobs = JobManager()
        self._frame_token = 0
        self._seq = 0  # job submissions, in order
        self._shown: dict[str, int] = {}  # detector -> submission its image comes from
        self._phase_sent: tuple[str, str] | None = None  # (UDF key, ROI key) of its job
        stack = MaskStack.from_any(default_detectors(self.det_shape) if detectors is None
                                   else detectors)
        # masks given in physical units (fm.ring(r_in=20, r_out=60, units="mrad")) become
        # the pixel detectors they imply on this array: the dashboard edits pixels
        stack = stack.resolved(self.calibration, self.det_shape)
        for name, spec in stack.items():
            color = next_color(d.color for d in self.detectors)
            self._attach(detector_from_spec(name, spec, color))
        self.selected = self.detectors[0].name if self.detectors else ""

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Compute the mean/max frame and every virtual image (one pass for all masks)."""
        self._start_summary()
        self._submit_images(self.detectors, channel="vi:*")
        self._refresh_frame()

    def close(self) -> None:
        """Stop all jobs (running partitions are cancelled at their next step)."""
        self.jobs.close()

    def _iter_run(self, udf: Any, roi: np.ndarray | None = None) -> Iterator[xr.Dataset]:
        """``iter_run`` on this dashboard's data and client, in a job thread."""
        # partials no more often than they can be shown; a short job publishes none
        opts = {"roi": roi, "client": self.client, "interval": PARTIAL_AFTER_S}
        if self.client == INLINE:
            yield from iter_run(udf, self.arr, **opts)
            return
        with current_client(self.client):
            yield from iter_run(udf, self.arr, **opts)

    # ---- display units ------------------------------------------------------------------
    @property
    def display(self) -> DisplayUnits:
        """The maps from pixels to what is displayed, for the current :attr:`units`."""
        return display_units(self.calibration, self.det_shape, self.units)

    def shown_geometry(self, name: str) -> dict[str, Any]:
        """Detector ``name``'s geometry in the displayed units (what the editor shows)."""
        det, m = self.detector(name), self.display.det
        return {p: m.geometry(p, getattr(det, p)) for p in det.geometry}

    def set_shown_geometry(self, name: str, **values: Any) -> None:
        """Set geometry of detector ``name`` given in the displayed units (typed in the
        editor), e.g. ``r_out=20.0`` mrad; stored in pixels."""
        det, m = self.detector(name), self.display.det
        unknown = set(values) - set(det.geometry)
        if unknown:
            raise ValueError(f"{name}: expected parameters of {sorted(det.geometry)}, found "
                             f"{sorted(unknown)}")
        det.param.update(**{p: m.geometry_px(p, v) for p, v in values.items()})

    def pick_shown(self, y: float, x: float) -> None:
        """:meth:`pick` at a scan position in the displayed units (a tap)."""
        m = self.display.scan
        self.pick(m.y_px(y), m.x_px(x))

    # ---- detectors ------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    def detector(self, name: str) -> Detector:
        for d in self.detectors:
            if d.name == name:
                return d
        raise KeyError(f"no detector {name!r}; detectors: {self.names}")

    def _attach(self, det: Detector) -> None:
        if det.name in self.names:
            raise ValueError(f"a detector named {det.name!r} exists already")
        det.param.watch(self._on_geometry, list(det.geometry))
        det.param.watch(self._on_style, ["name", "color"])
        self.detectors = [*self.detectors, det]

    def add(self, det: Detector | str, select: bool = True, **geometry: Any) -> Detector:
        """Add a detector (or a new one of kind ``disk``, ``ring``, ``box``, ``polygon``
        with default geometry around the detector centre) and compute its image."""
        if isinstance(det, str):
            det = self._new(det, **geometry)
        self._attach(det)
        if select:
            self.selected = det.name
        self._submit_images([det])
        self.param.trigger("shapes")
        return det

    def _new(self, kind: str, **geometry: Any) -> Detector:
        h, w = self.det_shape
        cy, cx, m = h / 2, w / 2, min(h, w)
        defaults: dict[str, tuple[type[Detector], dict[str, Any]]] = {
            "disk": (DiskDetector, {"cy": cy, "cx": cx, "r": m / 8}),
            "ring": (RingDetector, {"cy": cy, "cx": cx, "r_in": m / 4, "r_out": 0.45 * m}),
            "box": (BoxDetector, {"y0": cy - m / 8, "x0": cx - m / 8, "y1": cy + m / 8,
                                  "x1": cx + m / 8}),
            "polygon": (PolygonDetector, {"vertices": [(cy - m / 6, cx), (cy + m / 8, cx - m / 6),
                                                       (cy + m / 8, cx + m / 6)]}),
        }
        if kind not in defaults:
            raise ValueError(f"kind: expected one of {list(defaults)}, found {kind!r}")
        cls, params = defaults[kind]
        return cls(name=unique_name(kind, self.names),
                   color=next_color(d.color for d in self.detectors), **{**params, **geometry})

    def remove(self, name: str) -> None:
        """Remove a detector, its image and its job."""
        det = self.detector(name)
        self.jobs.cancel(f"vi:{name}")
        self.detectors = [d for d in self.detectors if d is not det]
        self.results.drop(f"vi:{name}")
        self._shown.pop(name, None)
        if self.selected == name:
            self.selected = self.detectors[0].name if self.detectors else ""
        self.param.trigger("shapes")

    def _on_geometry(self, *events: param.parameterized.Event) -> None:
        det = events[0].obj
        if det in self.detectors:
            self._submit_images([det])
            self.param.trigger("shapes")

    def _on_style(self, *events: param.parameterized.Event) -> None:
        for ev in events:
            if ev.name == "name" and ev.obj in self.detectors:
                if not ev.new or self.names.count(ev.new) > 1:
                    self.status = f"name {ev.new!r} is empty or taken; kept {ev.old!r}"
                    ev.obj.name = ev.old
                    return
                self.jobs.cancel(f"vi:{ev.old}")
                self.results.drop(f"vi:{ev.old}")
                self._shown.pop(ev.old, None)
                if self.selected == ev.old:
                    self.selected = ev.new
                self._submit_images([ev.obj])
        self.param.trigger("shapes")

    def masks(self) -> MaskStack:
        """The current detectors as a MaskStack (raises MaskError if one is invalid)."""
        return MaskStack({d.name: d.spec() for d in self.detectors})

    # ---- virtual images -----------------------------------------------------------------
    def _image_key(self, spec_key: str) -> tuple[str, str, str]:
        return (self.data_key, roi_key(None), spec_key)

    def _submit_images(self, dets: Iterable[Detector], channel: str | None = None) -> None:
        todo: dict[str, Any] = {}
        self._seq += 1
        seq = self._seq
        for det in dets:
            try:
                spec = det.spec()
                spec.rasterize(self.det_shape)  # empty or off-detector masks fail here
            except MaskError as exc:
                self.status = f"{det.name}: {exc}"
                self.jobs.cancel(f"vi:{det.name}")
                continue
            cached = results.get(self._image_key(spec.key))
            if cached is not None:
                self.jobs.cancel(f"vi:{det.name}")  # a stale job must not overwrite it
                self._put_image(det.name, np.asarray(cached), 1.0, spec.key, seq)
            else:
                todo[det.name] = spec
        if not todo:
            return
        stack = MaskStack(todo)
        chan = channel or f"vi:{next(iter(todo))}"
        if channel is None and len(todo) > 1:
            chan = "vi:*"
        started: list[float] = []

        def job() -> Iterator[xr.Dataset]:
            started.append(time.monotonic())
            return self._iter_run(ApplyMasks(stack))

        self.jobs.submit(chan, job, lambda ds: self._on_images(stack, chan, seq, ds,
                                                               started[0]), self._on_error)

    def _on_images(self, stack: MaskStack, channel: str, seq: int, ds: xr.Dataset,
                   started: float = 0.0) -> None:
        done = np.asarray(ds["done"])
        fraction = float(done.mean())
        self.results.set_progress(channel, fraction)
        if fraction < 1.0 and time.monotonic() - started < PARTIAL_AFTER_S:
            # a short job: its partial images would only take the display slot its
            # complete image needs (updates are throttled), so they are not shown
            return
        intensity = ds["intensity"]
        for name, spec in stack.items():
            img = np.asarray(intensity.sel(mask=name), dtype=np.float32)
            if fraction == 1.0:
                results.put(self._image_key(spec.key), img)  # shared with arr.fs
            elif (prev := self.results.get(f"vi:{name}")) is not None:
                img = np.where(done, img, prev.image).astype(np.float32)
            else:
                img = np.where(done, img, np.nan).astype(np.float32)
            self._put_image(name, img, fraction, spec.key, seq)

    def _put_image(self, name: str, img: np.ndarray, done: float, spec_key: str,
                   seq: int) -> None:
        # a job for an older position of a dragged detector may still finish and be shown
        # (the newest complete image there is), but never over a newer job's image
        if name in self.names and seq >= self._shown.get(name, -1):
            self._shown[name] = seq
            self.results.put(f"vi:{name}", VirtualImage(name, img, done, spec_key))

    def image(self, name: str) -> VirtualImage | None:
        """The latest virtual image of detector ``name`` (None before the first result)."""
        return self.results.get(f"vi:{name}")

    def _on_error(self, exc: BaseException) -> None:
        log.warning("dashboard job failed: %s", exc)
        self.results.put("status", f"error: {exc}")  # a job thread: the display loop shows it

    # ---- detector-view frame -------------------------------------------------------------
    def _summary_keys(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        base = (self.data_key, roi_key(None))
        return (*base, f"{_SUMMARY}.mean"), (*base, f"{_SUMMARY}.max")

    def summary(self, which: str) -> np.ndarray | None:
        """The complete mean or max frame, or None while it is being computed."""
        mean_key, max_key = self._summary_keys()
        return results.get(mean_key if which == "mean" else max_key)

    def _start_summary(self) -> None:
        if self.summary("mean") is not None and self.summary("max") is not None:
            return
        self.jobs.submit("summary", lambda: self._iter_run(summary_udfs()),
                         self._on_summary, self._on_error)

    def _on_summary(self, parts: dict[str, xr.Dataset]) -> None:
        fraction = _fraction(parts["sum"]["done"])
        self.results.set_progress("summary", fraction)
        n = max(int(parts["sum"]["n"]), 1)
        frames = {"mean": np.asarray(parts["sum"]["sum"]) / n,
                  "max": np.asarray(parts["max"]["max"])}
        if fraction == 1.0:
            for key, which in zip(self._summary_keys(), ("mean", "max"), strict=True):
                results.put(key, frames[which])
        if self.frame_mode in frames:
            mode = self.frame_mode
            self.results.put("frame", Frame(mode, frames[mode], f"{mode} frame", fraction))

    def _show_summary(self, mode: str) -> None:
        """The mean or max frame in the detector view (once it has been computed)."""
        self.jobs.cancel("frame")
        frame = self.summary(mode)
        if frame is not None:
            self.results.put("frame", Frame(mode, frame, f"{mode} frame", 1.0))

    @param.depends("frame_mode", "picked", "roi", watch=True)
    def _refresh_frame(self) -> None:
        self._frame_token += 1
        token, mode = self._frame_token, self.frame_mode
        if mode in ("mean", "max"):
            self._show_summary(mode)
            return
        if mode == "picked":
            y, x = (int(v) for v in self.picked)
            roi = np.zeros(self.scan_shape, dtype=bool)
            roi[y, x] = True
            label, at = f"frame at scan (y={y}, x={x})", (y, x)
        else:
            if self.roi is None:
                self.status = "draw a box or polygon ROI on the scan view"
                return
            roi = np.asarray(self.roi, dtype=bool)
            label, at = f"ROI sum of {int(roi.sum())} frames", None
        key = (self.data_key, roi_key(roi), _ROI_SUM)
        cached = results.get(key)
        if cached is not None:
            self.jobs.cancel("frame")
            self.results.put("frame", Frame(mode, cached, label, 1.0, at))
            return

        def on_update(ds: xr.Dataset) -> None:
            fraction = float(np.asarray(ds["done"])[roi].mean())
            self.results.set_progress("frame", fraction)
            if token != self._frame_token:
                return
            frame = np.asarray(ds["sum"])
            if fraction == 1.0:
                results.put(key, frame)
            self.results.put("frame", Frame(mode, frame, label, fraction, at))

        self.jobs.submit("frame", lambda: self._iter_run(SumFrame(), roi=roi),
                         on_update, self._on_error)

    def pick(self, y: float, x: float) -> None:
        """Show the frame at the scan position nearest ``(y, x)``."""
        ny, nx = self.scan_shape
        pos = (min(max(round(y), 0), ny - 1), min(max(round(x), 0), nx - 1))
        self.param.update(picked=pos, frame_mode="picked")

    def set_roi(self, roi: np.ndarray | None) -> None:
        """Show the summed frame of the ROI (None: back to the mean frame)."""
        if roi is None:
            self.param.update(roi=None, frame_mode="mean")
        else:
            self.param.update(roi=np.asarray(roi, dtype=bool), frame_mode="roi")

    # ---- bright-field disk ----------------------------------------------------------------------
    def bright_field(self) -> tuple[float, float, float] | None:
        """``(cy, cx, r)`` of the bright-field disk of the mean frame (None until computed)."""
        mean = self.summary("mean")
        if mean is None:
            self.status = "the mean frame is still being computed"
            return None
        return bright_field_disk(mean)

    def centre_on_bright_field(self, name: str | None = None) -> None:
        """Move a detector (default: the selected one) onto the bright-field disk centre."""
        found = self.bright_field()
        if found is None:
            return
        cy, cx, _ = found
        det = self.detector(name or self.selected)
        if isinstance(det, DiskDetector | RingDetector):
            det.param.update(cy=round(cy, 2), cx=round(cx, 2))
        else:
            sy, sx = centroid(det)
            det.translate(cy - sy, cx - sx)
