"""The scan-wide analyses of the dashboard's state: centre of mass and the phase image.

A base of :class:`~framescope.dashboard._state.DashboardState`: its settings are params
declared here (so the watchers below see them), the jobs and results are the state's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import param
import xarray as xr

from framescope.dashboard._phase_methods import PHASE_METHODS, PhaseSettings, calibration_hint
from framescope.dashboard._results import ComResult, PhaseResult
from framescope.engine._cache import roi_key
from framescope.udf import UDF, CenterOfMass, Meta

if TYPE_CHECKING:
    from collections.abc import Iterator

    from framescope.dashboard._jobs import JobManager
    from framescope.dashboard._results import Results

__all__ = ["ScanAnalyses"]

log = logging.getLogger(__name__)


class ScanAnalyses(param.Parameterized):
    """COM and phase settings, and the jobs that keep their results current."""

    com_enabled = param.Boolean(default=False, doc="Compute centre of mass maps")
    com_cy = param.Number(default=None, allow_None=True, doc="COM reference centre y (px)")
    com_cx = param.Number(default=None, allow_None=True, doc="COM reference centre x (px)")
    com_radius = param.Number(default=None, allow_None=True, bounds=(0, None),
                              doc="COM: only pixels this close to the centre (px)")
    com_rotation = param.Number(default=0.0, doc="Scan rotation (degrees)")
    com_flip_y = param.Boolean(default=False, doc="Flip detector y before rotating")
    phase_enabled = param.Boolean(default=False, doc="Compute the phase image")
    phase_method = param.Selector(default="SSB", objects=list(PHASE_METHODS), doc=(
        "Phase method: SSB ptychography, iDPC (integrates the COM tab's settings) or tcBF"))
    phase_component = param.Selector(
        default="phase", objects=sorted({c for m in PHASE_METHODS.values()
                                         for c in m.components}),
        doc="Output of the phase method shown (one the method has)")
    phase_defocus = param.Number(default=0.0, doc="SSB: probe defocus to correct (nm)")
    phase_highpass = param.Number(default=0.0, bounds=(0, None), doc=(
        "iDPC: frequency below which the phase is damped (cycles per scan step)"))

    # provided by DashboardState
    arr: xr.DataArray
    jobs: JobManager
    results: Results
    scan_shape: tuple[int, int]
    _phase_sent: Any

    def _iter_run(self, udf: Any, roi: np.ndarray | None = None) -> Iterator[xr.Dataset]:
        raise NotImplementedError

    def _on_error(self, exc: BaseException) -> None:
        raise NotImplementedError

    def bright_field(self) -> tuple[float, float, float] | None:
        raise NotImplementedError

    def centre_com_on_bright_field(self) -> None:
        """COM reference centre on the bright-field disk, radius 1.2x the disk's."""
        found = self.bright_field()
        if found is not None:
            cy, cx, r = found
            self.param.update(com_cy=round(cy, 2), com_cx=round(cx, 2),
                              com_radius=round(1.2 * r, 2))

    # ---- centre of mass -----------------------------------------------------------------------
    def com_params(self) -> dict[str, Any]:
        return {"cy": self.com_cy, "cx": self.com_cx, "radius": self.com_radius,
                "rotation": self.com_rotation, "flip_y": self.com_flip_y}

    @param.depends("com_enabled", "com_cy", "com_cx", "com_radius", "com_rotation",
                   "com_flip_y", watch=True)
    def _refresh_com(self) -> None:
        if not self.com_enabled:
            return
        try:
            udf = CenterOfMass(**self.com_params())
        except ValueError as exc:
            self.status = f"COM: {exc}"
            return

        def on_update(ds: xr.Dataset) -> None:
            fraction = float(np.asarray(ds["done"]).mean())
            self.results.set_progress("com", fraction)
            self.results.put("com", ComResult(ds, fraction))

        self.jobs.submit("com", lambda: self._iter_run(udf),
                         on_update, self._on_error)

    # ---- phase ------------------------------------------------------------------------------
    def phase_settings(self) -> PhaseSettings:
        """The Phase tab's settings (iDPC integrates the COM tab's)."""
        return PhaseSettings(component=self.phase_component,
                             defocus_nm=float(self.phase_defocus),
                             highpass=float(self.phase_highpass), com=self.com_params())

    def phase_meta(self) -> Meta:
        """What a phase UDF knows of this dashboard's data (after its corrections)."""
        frame_shape, cal = self.arr.fs._geometry(self.arr)
        return Meta(self.scan_shape, tuple(frame_shape), self.arr.dtype, calibration=cal)

    def phase_udf(self) -> UDF:
        """The selected phase method's UDF, checked against the data.

        Raises
        ------
        ValueError
            Settings the UDF refuses, or a calibration that lacks what the method needs
            (the message names the fields).
        """
        return PHASE_METHODS[self.phase_method].udf(self.phase_settings(), self.phase_meta())

    def _phase_roi(self) -> np.ndarray | None:
        """Positions to compute the phase over (None: the whole scan)."""
        return None

    @param.depends("phase_enabled", "phase_method", "phase_component", "phase_defocus",
                   "phase_highpass", "com_cy", "com_cx", "com_radius", "com_rotation",
                   "com_flip_y", watch=True)
    def _refresh_phase(self) -> None:
        method = PHASE_METHODS[self.phase_method]
        if method.component(self.phase_component) != self.phase_component:
            self.phase_component = method.component(self.phase_component)  # calls again
            return
        if not self.phase_enabled:
            return
        try:
            udf = method.make(self.phase_settings())
        except ValueError as exc:
            self._phase_failed(method.name, f"{method.name}: {exc}")
            return
        try:
            method.check(udf, self.phase_meta())
        except ValueError as exc:  # before any frame is read: what to calibrate
            self._phase_failed(method.name, f"{exc}\n\n{calibration_hint(method)}")
            return
        roi = self._phase_roi()
        if roi is not None and not roi.any():
            return
        sent = (udf.key, roi_key(roi))
        if sent == self._phase_sent:
            return  # a COM edit the method does not use, or nothing new to cover
        self._phase_sent = sent
        name = method.name

        def on_update(ds: xr.Dataset) -> None:
            done = np.asarray(ds["done"], dtype=bool)
            fraction = float(done.mean() if roi is None else done[roi].mean())
            self.results.set_progress("phase", fraction)
            self.results.put("phase", PhaseResult(name, ds, fraction))

        def on_error(exc: BaseException) -> None:
            log.warning("dashboard phase job failed: %s", exc)
            self._phase_sent = None  # the same settings may be tried again
            self.results.put("phase", PhaseResult(name, None, 0.0, f"{name}: {exc}"))

        self.jobs.submit("phase", lambda: self._iter_run(udf, roi=roi), on_update, on_error)

    def _phase_failed(self, method: str, message: str) -> None:
        self._phase_sent = None
        self.jobs.cancel("phase")
        self.results.set_progress("phase", 1.0)
        shown = self.results.get("phase")
        if shown is None or (shown.method, shown.message) != (method, message):
            self.results.put("phase", PhaseResult(method, None, 0.0, message))
