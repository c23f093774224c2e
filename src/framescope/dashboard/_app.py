"""The dashboard: state, views and the display loop that pushes results to the browser.

Job threads never touch Bokeh models. They publish to the state's
:class:`~framescope.dashboard._results.Results`, and :meth:`Dashboard.flush` on the
document's event loop sends only what changed since its last run, block-averaged to a small
payload, straight into the Bokeh models (:mod:`~framescope.dashboard._bokeh`). In a served
session a result wakes the loop at once (the next tick, or when ``update_period`` ms have
passed since the last flush, so at most 10 updates a second and no waiting for a timer);
a periodic callback at the same period is the fallback, and drives notebooks.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from io import BytesIO
from typing import Any

import holoviews as hv
import panel as pn
import param

from framescope.dashboard._com import ComView
from framescope.dashboard._detector import DetectorView
from framescope.dashboard._editor import DetectorEditor
from framescope.dashboard._export import notebook_code, results_bytes, write_results
from framescope.dashboard._phase import PhaseView
from framescope.dashboard._scan import ScanView
from framescope.dashboard._state import DashboardState
from framescope.dashboard._units import UNITS

__all__ = ["Dashboard", "load_extensions"]

log = logging.getLogger(__name__)
_loaded: list[bool] = []


def load_extensions() -> None:
    """Load holoviews' Bokeh backend and panel with inline JS/CSS (works offline)."""
    if not _loaded:
        hv.extension("bokeh", inline=True, logo=False)
        pn.extension(inline=True)
        _loaded.append(True)


class Dashboard(pn.viewable.Viewer):
    """framescope's 4D-STEM dashboard; see :func:`framescope.dashboard.dashboard`.

    Attributes
    ----------
    state : DashboardState
        Detectors, choices and results (drive it from code, e.g. in tests).
    detector_view : DetectorView
        The detector frame with the virtual detectors drawn on it, and their controls.
    scan_view : ScanView
        The virtual images over the scan (tap a position, draw an ROI).
    com_view : ComView
        Centre-of-mass / DPC maps and their controls.
    phase_view : PhaseView
        The phase image (SSB, iDPC or tcBF) and its controls.
    """

    update_period = param.Integer(default=100, bounds=(100, None),
                                  doc="Milliseconds between browser updates (<= 10/s)")
    tab = param.Integer(default=0, bounds=(0, 3), doc=(
        "Open tab: 0 virtual image, 1 COM / DPC, 2 phase, 3 export (the live dashboard opens "
        "each series' dashboard on the tab the previous one had open)"))
    display_loop = param.Boolean(default=True, doc=(
        "Run the display loop here; False when a container calls flush() itself (the "
        "live dashboard)"))

    def __init__(self, arr: Any = None, client: Any = None, detectors: Any = None,
                 state: DashboardState | None = None, **params: Any) -> None:
        load_extensions()
        super().__init__(**params)
        # a state of its own (the live dashboard's) or one over ``arr``
        self.state = state if state is not None else DashboardState(
            arr, client=client, detectors=detectors)
        self.detector_view = DetectorView(self.state)
        self.scan_view = ScanView(self.state)
        self.com_view = ComView(self.state)
        self.phase_view = PhaseView(self.state)
        self.editor = DetectorEditor(self.state)
        self._layout: pn.viewable.Viewable | None = None
        self._callback: Any = None
        self._doc: Any = None  # the served session's document, woken by new results
        self._loading = False  # a served page that has not loaded yet: nothing is flushed
        self._last_flush = 0.0
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self.progress = pn.indicators.Progress(value=0, max=100, width=160, height=20,
                                               bar_color="info")
        self.activity = pn.pane.Str("", width=420)
        self.message = pn.pane.Str("", styles={"color": "#b00"})
        self.code_pane = pn.pane.Markdown("", width=620)
        self.state.param.watch(lambda ev: setattr(self.message, "object", ev.new), "status")
        self.state.start()

    # ---- display loop ----------------------------------------------------------------------
    def flush(self) -> int:
        """Push the results that changed since the last call; returns the number of view
        updates sent (at most one per image per call)."""
        n = 0
        for key, value in self.state.results.take().items():
            if key.startswith("vi:"):
                self.scan_view.show(key[3:], value)
            elif key == "frame" and value is not None:
                self.detector_view.show(value)
            elif key == "com" and value is not None:
                self.com_view.show(value)
            elif key == "phase" and value is not None:
                self.phase_view.show(value)
            elif key == "status" and value:
                self.state.status = value
            n += 1
        if n:  # the throttle counts updates sent, not empty ticks
            self._last_flush = time.monotonic()
        self._show_progress()
        return n

    def _show_progress(self) -> None:
        busy = set(self.state.jobs.busy())
        fractions = {k: v for k, v in self.state.results.progress().items()
                     if k in busy or v < 1}
        if fractions:
            self.progress.value = int(100 * min(fractions.values()))
            self.activity.object = " · ".join(f"{k.removeprefix('vi:')} {v:.0%}"
                                              for k, v in sorted(fractions.items()))
        else:
            self.progress.value = 100
            self.activity.object = "up to date"

    def _tick(self) -> None:
        """The periodic fallback: flush unless an update went out within the period."""
        if self._loading:  # what it took now would be lost; the page's load flushes it all
            return
        if time.monotonic() - self._last_flush >= 0.9e-3 * self.update_period:
            self.flush()

    def _start_updates(self) -> None:
        if self._callback is None and self.display_loop:
            self._callback = pn.state.add_periodic_callback(self._tick,
                                                            period=self.update_period)
            doc = pn.state.curdoc
            if doc is not None and doc.session_context is not None:
                pn.state.on_session_destroyed(lambda _ctx: self.close())

                def wake_on_results() -> None:
                    # only once the page has loaded: changes sent before are lost, and the
                    # results they carried would not be sent again (nor by the periodic
                    # flush, which waits for the load too)
                    self._loading = False
                    self._doc = doc
                    self.state.results.listener = self._wake
                    self._wake()

                self._loading = True
                pn.state.onload(wake_on_results)

    def _wake(self) -> None:
        """A result arrived (any thread): flush on the next tick of the session's loop, or
        once ``update_period`` has passed since the last flush."""
        with self._wake_lock:
            if self._wake_pending or self._doc is None:
                return
            self._wake_pending = True
        try:
            self._doc.add_next_tick_callback(self._woken)  # Bokeh's thread-safe entry
        except Exception:  # the session is gone
            log.debug("dashboard wake-up dropped", exc_info=True)

    def _woken(self) -> None:
        doc = self._doc
        if doc is None:
            return
        wait = self._last_flush + 1e-3 * self.update_period - time.monotonic()
        if wait > 0.002:
            doc.add_timeout_callback(self._woken_flush, int(1e3 * wait) + 1)
        else:
            self._woken_flush()

    def _woken_flush(self) -> None:
        from panel.io.state import set_curdoc

        with self._wake_lock:
            self._wake_pending = False  # results from now on wake the loop again
        doc = self._doc
        if doc is not None:
            with set_curdoc(doc):
                self.flush()

    def close(self) -> None:
        """Stop the display loop and every job of this dashboard."""
        self.state.results.listener = None
        self._doc = None
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self.state.close()

    # ---- export ------------------------------------------------------------------------------
    def save(self, path: str) -> str:
        """Write the current results (NetCDF4/HDF5) to ``path`` on the server's disk.

        ``virtual_image`` (scan_y, scan_x, mask) carries the masks JSON and the framescope
        version in attrs, as ``arr.fs.virtual_image`` does; see
        :func:`~framescope.dashboard._export.results_dataset` for the other variables.
        """
        return str(write_results(self.state, path))

    def code(self) -> str:
        """Notebook code that recomputes the current results without the dashboard."""
        return notebook_code(self.state)

    def _export_panel(self) -> pn.viewable.Viewable:
        download = pn.widgets.FileDownload(
            callback=lambda: BytesIO(results_bytes(self.state)),
            filename="framescope-results.nc", label="Download results (.nc)",
            width=260)
        path = pn.widgets.TextInput(label="save on the server as", value="framescope-results.nc",
                                    width=300)
        save = pn.widgets.Button(label="save", width=80)
        saved = pn.pane.Str("")

        def on_save(_: Any) -> None:
            try:
                saved.object = f"wrote {self.save(path.value)}"
            except OSError as exc:
                saved.object = f"could not write {path.value}: {exc}"

        save.on_click(on_save)
        refresh = pn.widgets.Button(label="refresh code", width=120)
        refresh.on_click(lambda _: self._refresh_code())
        self._refresh_code()
        return pn.Column(download, pn.Row(path, save), saved,
                         pn.pane.Markdown("**The same in a notebook:**"), refresh, self.code_pane)

    def _refresh_code(self) -> None:
        self.code_pane.object = f"```python\n{notebook_code(self.state)}```"

    # ---- layout ----------------------------------------------------------------------------
    def units_toggle(self) -> pn.viewable.Viewable:
        """``units: px | physical`` for the axes, detector fields and readouts; shown only
        for a calibrated array (detector angle or scan step known)."""
        buttons = pn.widgets.RadioButtonGroup.from_param(
            self.state.param.units, options=list(UNITS), width=150, margin=(2, 5))
        return pn.Row(pn.pane.Str("units", margin=(8, 0, 0, 10)), buttons,
                      visible=self.state.calibrated)

    def __panel__(self) -> pn.viewable.Viewable:
        self._start_updates()
        if self._layout is not None:
            return self._layout
        st = self.state
        ny, nx = st.scan_shape
        h, w = st.det_shape
        source = html.escape(str(st.arr.attrs.get("source") or st.arr.attrs.get("format")
                                 or "data"))
        title = pn.pane.Markdown(f"### framescope · {source} · scan {ny}×{nx} · "
                                 f"detector {h}×{w}", margin=(0, 10))
        tabs = pn.Tabs(("Virtual image", self.scan_view), ("COM / DPC", self.com_view),
                       ("Phase", self.phase_view), ("Export", self._export_panel()),
                       active=self.tab)

        def on_tab(index: int) -> None:
            self.tab = index
            if index == 1:
                st.com_enabled = True  # COM is computed the first time it is looked at
            if index == 2:
                st.phase_enabled = True  # so is the phase
            if index == 3:
                self._refresh_code()

        on_tab(self.tab)
        tabs.param.watch(lambda event: on_tab(event.new), "active")
        self._layout = pn.Column(
            pn.Row(title, self.units_toggle(), self.progress, self.activity, self.message),
            pn.Row(self.editor, pn.Column(self.detector_view), tabs),
            pn.pane.Markdown("**Virtual images**", margin=(0, 10)),
            self.scan_view.gallery,
        )
        return self._layout
