"""The dashboard of a live ptychographic reconstruction (:func:`framescope.ptycho.start`).

A periodic callback on the session's event loop (``period_ms``) reads the handle's
``partial()`` Dataset and sends each image (object phase and amplitude, probe amplitude and
phase, one pair per probe mode) and the error curve through a ``Pipe`` into its plot, so the
plots update in place and keep the user's zoom; a plot is rebuilt only when its image's
shape, its length unit or the number of probe modes change. The solver thread never touches
a Bokeh model. Stop and Reset run in threads of their own: ``Reconstruction.stop`` waits for
the current sweep, which the server must not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr

from framescope.dashboard._app import load_extensions
from framescope.dashboard._images import color_limits, downsample

__all__ = ["Panel", "PtychoView", "is_reconstruction", "panels", "status_text"]

log = logging.getLogger(__name__)

#: metres per unit of a length coordinate's ``units`` attribute
_METRES = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "nm": 1e-9, "Å": 1e-10,
           "A": 1e-10, "angstrom": 1e-10, "pm": 1e-12}
#: images narrower than this (nm) get their axes in Å
_ANGSTROM_BELOW_NM = 5.0


@dataclass(frozen=True, slots=True)
class Panel:
    """One image of the view: its values over ``(y, x)`` in ``unit`` (nm or Å)."""

    title: str
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    unit: str
    cmap: str
    percentiles: tuple[float, float]


def is_reconstruction(obj: Any) -> bool:
    """A running reconstruction's handle (:class:`framescope.ptycho.Reconstruction` or any
    object with ``partial``, ``done`` and ``stop``) rather than a source."""
    return all(callable(getattr(obj, a, None)) for a in ("partial", "done", "stop"))


def _nm(coord: xr.DataArray) -> np.ndarray:
    """A length coordinate in nm, from its ``units`` attribute (nm when it has none)."""
    unit = str(coord.attrs.get("units", "nm")).strip()
    if unit not in _METRES:
        raise ValueError(f"coordinate {coord.name!r}: expected units of length "
                         f"{sorted(_METRES)}, found {unit!r}")
    return np.asarray(coord.values, dtype=np.float64) * (_METRES[unit] / 1e-9)


def _panel(da: xr.DataArray, title: str, cmap: str,
           percentiles: tuple[float, float]) -> Panel:
    dy, dx = da.dims[-2:]
    y = _nm(da[dy]) if dy in da.coords else np.arange(da.shape[-2], dtype=np.float64)
    x = _nm(da[dx]) if dx in da.coords else np.arange(da.shape[-1], dtype=np.float64)
    extent = max(np.ptp(y), np.ptp(x)) if y.size and x.size else 0.0
    unit = "Å" if extent < _ANGSTROM_BELOW_NM else "nm"
    scale = 10.0 if unit == "Å" else 1.0
    z = np.asarray(da.values, dtype=np.float32)
    return Panel(title, z, y * scale, x * scale, unit, cmap, percentiles)


def _probe_parts(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """Probe amplitude and phase: from a complex ``probe`` or from ``probe_amplitude`` and
    ``probe_phase`` (either may have a leading ``mode`` dim)."""
    if "probe" in ds and np.iscomplexobj(ds["probe"].values):
        p = ds["probe"]
        return (xr.apply_ufunc(np.abs, p, keep_attrs=False),
                xr.apply_ufunc(np.angle, p, keep_attrs=False))
    missing = [v for v in ("probe_amplitude", "probe_phase") if v not in ds]
    if missing:
        raise KeyError(f"reconstruction: expected a complex 'probe' or 'probe_amplitude' and "
                       f"'probe_phase', found variables {sorted(ds.data_vars)}")
    return ds["probe_amplitude"], ds["probe_phase"]


def panels(ds: xr.Dataset) -> dict[str, Panel]:
    """The images of a reconstruction, by title: the object's phase and amplitude, then the
    probe's amplitude and phase (per mode if the probe has a ``mode`` dim)."""
    out = {p.title: p for p in (
        _panel(ds["object_phase"], "object phase (rad)", "gray", (0.5, 99.5)),
        _panel(ds["object_amplitude"], "object amplitude", "viridis", (0.5, 99.5)))}
    amp, phase = _probe_parts(ds)
    if "mode" in amp.dims:
        n = amp.sizes["mode"]
        amp, phase = amp.transpose("mode", ...), phase.transpose("mode", ...)
        pairs = [(amp[k], phase[k], f", mode {k}") for k in range(n)]
    else:
        pairs = [(amp, phase, "")]
    for a, p, suffix in pairs:
        for panel in (_panel(a, f"probe amplitude{suffix}", "viridis", (0.0, 100.0)),
                      _panel(p, f"probe phase{suffix} (rad)", "twilight", (0.0, 100.0))):
            out[panel.title] = panel
    return out


def status_text(ds: xr.Dataset | None, state: str) -> str:
    """The status line: state, iterations, frames received of the scan, last error."""
    if ds is None:
        return f"**{state}** · no update yet (the first comes after the first frames and " \
               "``update_every`` sweeps)"
    its = int(ds.attrs.get("iterations", ds.sizes.get("iteration", 0)))
    parts = [f"**{state}**", f"iteration **{its}**"]
    if "measured" in ds:
        m = np.asarray(ds["measured"].values, dtype=bool)
        parts.append(f"frames received **{int(m.sum())}** / {m.size} "
                     f"({m.mean() if m.size else 0.0:.0%} measured)")
    if "error" in ds and ds.sizes.get("iteration", 0):
        parts.append(f"error {float(ds['error'].values[-1]):.4g}")
    if "algorithm" in ds.attrs:
        parts.append(str(ds.attrs["algorithm"]))
    return " · ".join(parts)


class PtychoView(pn.viewable.Viewer):
    """A running ptychographic reconstruction: object, probe, error curve, status, Stop and
    Reset (see :func:`framescope.dashboard.ptycho_view`).

    Parameters
    ----------
    reconstruction : framescope.ptycho.Reconstruction
        The handle to show (any object with ``partial()``, ``done()``, ``stop()``).
    source : xarray.DataArray or live source, optional
        What Reset reconstructs anew (Reset is disabled without it).
    options : dict, optional
        The :func:`framescope.ptycho.start` options Reset passes.
    start : callable, optional
        Makes the new handle: ``start(source, **options)`` (default
        :func:`framescope.ptycho.start`).
    **params
        ``period_ms``.
    """

    period_ms = param.Integer(default=500, bounds=(100, None),
                              doc="Milliseconds between refreshes")

    def __init__(self, reconstruction: Any, *, source: Any = None,
                 options: dict[str, Any] | None = None,
                 start: Callable[..., Any] | None = None, **params: Any) -> None:
        load_extensions()
        super().__init__(**params)
        self.reconstruction = reconstruction
        self.source = source
        self.options = dict(options or {})
        self._start_fn = start
        self.pipes: dict[str, hv.streams.Pipe] = {}
        self._layout: tuple[Any, ...] | None = None
        self._shown: xr.Dataset | None = None  # the Dataset last sent
        self._shown_rec: Any = reconstruction
        self._callback: Any = None
        self._stopping: Any = None  # the handle a Stop was sent to
        self._resetting = False
        self.stopper: threading.Thread | None = None
        self.resetter: threading.Thread | None = None
        self.failure = ""  # why the reconstruction failed
        self.reset_failure = ""  # why the last reset could not start a new one
        self.status_pane = pn.pane.Markdown("", width=900)
        self.images_area = pn.FlexBox(pn.pane.Markdown("waiting for the first update"))
        self.error_pipe = hv.streams.Pipe(data={"x": np.zeros(0), "y": np.zeros(0)})
        self.error_plot = pn.pane.HoloViews(
            hv.DynamicMap(_error_curve, streams=[self.error_pipe]).opts(
                width=420, height=300, logy=True, framewise=True, tools=["hover"],
                title="error"), linked_axes=False)
        self.stop_button = pn.widgets.Button(label="Stop", color="danger", width=110)
        self.stop_button.on_click(lambda _: self.stop())
        self.reset_button = pn.widgets.Button(label="Reset", color="warning", width=110,
                                              disabled=source is None)
        self.reset_button.on_click(lambda _: self.reset())
        self.refresh()

    # ---- the refresh loop -----------------------------------------------------------------
    def refresh(self) -> None:
        """Show the reconstruction's latest update and state; after it ended (and no reset
        is under way) this last refresh stops the loop."""
        rec = self.reconstruction
        if rec is not self._shown_rec:  # a reset replaced it
            self._shown_rec, self._shown = rec, None
        finished = rec.done()  # read first: the partial() that follows is then final
        ds = rec.partial()
        if ds is not None and ds is not self._shown:
            self._show(ds)
            self._shown = ds
        self.status_pane.object = status_text(ds, self._state(rec, finished, ds))
        self.stop_button.disabled = finished or self._stopping is rec or self._resetting
        self.stop_button.label = "stopping…" if self._stopping is rec and not finished \
            else "Stop"
        self.reset_button.disabled = self.source is None or self._resetting
        if finished and not self._resetting:
            self._stop_loop()

    def _state(self, rec: Any, finished: bool, ds: xr.Dataset | None) -> str:
        if self._resetting:
            return "resetting…"
        if self.reset_failure:
            return self.reset_failure
        if not finished:
            if self._stopping is rec:
                return "stopping…"
            return "running" if ds is not None else "waiting for frames"
        try:
            rec.result(0)
        except Exception as exc:  # shown, not raised in the server
            self.failure = f"{type(exc).__name__}: {exc}"
            return f"failed: {self.failure}"
        if ds is not None and ds.attrs.get("stopped"):
            return "stopped"
        return "finished"

    def _show(self, ds: xr.Dataset) -> None:
        shown = panels(ds)
        layout = tuple((t, p.z.shape, p.unit) for t, p in shown.items())
        if layout != self._layout:  # new plots; otherwise the same plots, new data
            self._layout = None  # nothing goes into the previous plots meanwhile
            self.pipes = {t: hv.streams.Pipe(data=_payload(p)) for t, p in shown.items()}
            self.images_area.objects = [
                pn.pane.HoloViews(_image_map(self.pipes[t], p), linked_axes=False)
                for t, p in shown.items()]
            self._layout = layout
        else:
            for t, p in shown.items():
                self.pipes[t].send(_payload(p))
        its = np.asarray(ds["iteration"].values if "iteration" in ds.coords
                         else np.arange(ds.sizes.get("iteration", 0)), dtype=np.float64)
        err = np.asarray(ds["error"].values if "error" in ds else np.zeros(0), np.float64)
        # a log axis has no place for 0: those sweeps are gaps
        self.error_pipe.send({"x": its, "y": np.where(err > 0, err, np.nan)})

    def _start(self) -> None:
        if self._callback is None and (not self.reconstruction.done() or self._resetting):
            self._callback = pn.state.add_periodic_callback(self.refresh,
                                                            period=self.period_ms)

    def _stop_loop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def close(self) -> None:
        """Stop the refresh loop (the reconstruction goes on)."""
        self._stop_loop()

    # ---- buttons --------------------------------------------------------------------------
    def stop(self) -> threading.Thread:
        """Stop the reconstruction in a thread (``stop()`` waits for the current sweep; the
        server must not); the next refreshes show the end."""
        rec = self._stopping = self.reconstruction
        self.stop_button.disabled = True
        self.stop_button.label = "stopping…"
        self.stopper = threading.Thread(target=_quietly, args=(rec.stop,), daemon=True,
                                        name="framescope-ptycho-stop")
        self.stopper.start()
        return self.stopper

    def reset(self) -> threading.Thread:
        """Stop the reconstruction and start a fresh one on the same source with the same
        options, in a thread; the view follows the new one.

        Raises
        ------
        RuntimeError
            The view has no source to start from.
        """
        if self.source is None:
            raise RuntimeError("reset: this view has no source (pass source= with the "
                               "reconstruction)")
        old = self.reconstruction
        self._resetting = True
        self.reset_failure = ""
        self.stop_button.disabled = self.reset_button.disabled = True

        def work() -> None:
            try:
                _quietly(old.stop)
                start = self._start_fn or _ptycho_start()
                self.reconstruction = start(self.source, **self.options)
            except Exception as exc:  # shown in the page: the server must not raise
                self.reset_failure = f"reset failed: {type(exc).__name__}: {exc}"
                log.warning("ptycho view: %s", self.reset_failure)
            finally:
                self._resetting = False

        self.resetter = threading.Thread(target=work, daemon=True,
                                         name="framescope-ptycho-reset")
        self.resetter.start()
        self._start()  # the loop may have ended with the old reconstruction
        return self.resetter

    def __panel__(self) -> pn.viewable.Viewable:
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            pn.state.onload(self._start)  # after the page loaded (see LiveDashboard)
            pn.state.on_session_destroyed(lambda _ctx: self.close())
        else:
            self._start()
        bar = pn.Row(self.stop_button, self.reset_button, self.status_pane)
        return pn.Column(bar, pn.Row(self.images_area, self.error_plot))


def _quietly(fn: Callable[[], Any]) -> None:
    """``fn()``, its exception logged: a failed reconstruction's stop() re-raises why it
    failed, which the status line already says."""
    try:
        fn()
    except Exception as exc:
        log.info("ptycho view: %s: %s", type(exc).__name__, exc)


def _ptycho_start() -> Callable[..., Any]:
    from framescope.ptycho import start

    return start


def _payload(p: Panel) -> dict[str, Any]:
    """What a panel's Pipe gets: the image (block means beyond the send limit), its axes."""
    z, f = downsample(p.z)
    return {"x": _block_axis(p.x, f), "y": _block_axis(p.y, f), "z": z,
            "clim": color_limits(z, p.percentiles)}


def _block_axis(values: np.ndarray, f: int) -> np.ndarray:
    """Centres of ``f``-pixel blocks of an evenly spaced axis (the last one may be short)."""
    if f == 1 or values.size < 2:
        return values
    step = (values[-1] - values[0]) / (values.size - 1)
    return values[0] + (np.arange(-(-values.size // f)) * f + (f - 1) / 2) * step


def _image_map(pipe: hv.streams.Pipe, p: Panel) -> hv.DynamicMap:
    h, w = (float(np.ptp(a)) if a.size > 1 else 1.0 for a in (p.y, p.x))
    kdims = [hv.Dimension("x", unit=p.unit), hv.Dimension("y", unit=p.unit)]

    def image(data: dict[str, Any]) -> hv.Image:
        return hv.Image((data["x"], data["y"], data["z"]), kdims=kdims,
                        vdims=["value"]).opts(clim=data["clim"])

    width = 300
    return hv.DynamicMap(image, streams=[pipe]).opts(
        title=p.title, cmap=p.cmap, colorbar=True, invert_yaxis=True, tools=["hover"],
        responsive=False, frame_width=width,
        frame_height=max(60, min(600, round(width * h / (w or 1.0)))),
        clipping_colors={"NaN": "transparent"})


def _error_curve(data: dict[str, Any]) -> hv.Curve:
    return hv.Curve((data["x"], data["y"]), "iteration", "error")
