"""Interactive dashboard: draw virtual detectors on a frame and watch the images fill in.

``framescope.dashboard(arr)`` (this module is callable, so ``fs.dashboard(arr)`` works
whether or not the subpackage was imported first) returns a panel component that renders in
a JupyterLab cell and is servable with ``panel serve``; ``framescope serve --demo`` serves it
on the built-in synthetic dataset. Needs the ``[dashboard]`` extra (panel, holoviews,
bokeh); importing this package does not import them, so dask workers can unpickle the
dashboard's UDFs without panel.

The ZeroMQ source widgets (:func:`source_widget`, :class:`SourceWidget` for panel,
:class:`SourceIPyWidget` for ipywidgets) connect to a detector stream and show its status
and latest frame; they also need the ``[live]`` extra, and import panel or ipywidgets only
when first used.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from framescope.dashboard._app import Dashboard
    from framescope.dashboard._source_ipywidget import SourceIPyWidget
    from framescope.dashboard._source_widget import SourceWidget
    from framescope.live import ZMQSource

__all__ = ["Dashboard", "SourceIPyWidget", "SourceWidget", "dashboard", "events_view", "live",
           "ptycho_view", "source_widget"]


def dashboard(arr: Any, client: Any = None, **params: Any) -> Dashboard:
    """The framescope dashboard for a ``(scan_y, scan_x, det_y, det_x)`` DataArray.

    Parameters
    ----------
    arr : xarray.DataArray or framescope.live.ZMQSource
        Frames from :func:`framescope.open`, :func:`framescope.from_array` or
        :func:`framescope.datasets.synthetic`; persist them first
        (``arr = arr.fs.persist(client)``) so that an edit costs only the mask product.
        A ZeroMQ source gives the live dashboard (:func:`live`).
    client : None, "inline", str or distributed.Client
        Where jobs run, as for :func:`framescope.run` (default: the current dask client, or a
        ``LocalCluster`` started on first use).
    **params
        Parameters of :class:`~framescope.dashboard.Dashboard`, e.g. ``detectors=`` (a
        :class:`~framescope.masks.MaskStack` or dict of mask specs to start with) or
        ``update_period=`` (ms between browser updates, at least 100).

    Returns
    -------
    Dashboard
        A panel ``Viewer``: display it in a notebook cell, or call ``.servable()`` in a
        script for ``panel serve``.

    Examples
    --------
    >>> import framescope as fs  # doctest: +SKIP
    >>> arr = fs.datasets.synthetic(scan=(64, 64), det=(128, 128))  # doctest: +SKIP
    >>> fs.dashboard(arr, client="inline")  # doctest: +SKIP
    """
    from framescope.dashboard._app import Dashboard, load_extensions

    load_extensions()
    if _is_live(arr):
        from framescope.dashboard._live import LiveDashboard

        return LiveDashboard(arr, **params)
    return Dashboard(arr=arr, client=client, **params)


def _is_live(obj: Any) -> bool:
    """A ZeroMQ source (``framescope.live.ZMQSource``) rather than frames."""
    return hasattr(obj, "latest_frame") and hasattr(obj, "endpoint")


def live(source: Any = None, **params: Any) -> Any:
    """The live dashboard: a ZeroMQ source widget and the virtual images of the series it
    receives (see :class:`~framescope.dashboard._live.LiveDashboard`).

    Parameters
    ----------
    source : framescope.live.ZMQSource, optional
        The stream; without one, type the endpoint in the widget and connect.
    **params
        ``detectors=``, ``max_gib=``, ``refresh_ms=`` and the widget's ``endpoint=``,
        ``protocol=``, ``scan=``.
    """
    from framescope.dashboard._app import load_extensions
    from framescope.dashboard._live import LiveDashboard

    load_extensions()
    return LiveDashboard(source, **params)


def events_view(job: Any, *, period_ms: int = 500, **params: Any) -> Any:
    """The dashboard of a running event job (:func:`framescope.events.submit`): status and
    per-stream counters, the reducer's published state (images, curves, text) updated in
    place, a JSON editor of the parameters and a stop button.

    Parameters
    ----------
    job : framescope.events.EventJob
        The job to watch (any object with ``published()``, ``status``, ``parameters``,
        ``done()`` and ``stop()``).
    period_ms : int
        Milliseconds between refreshes (at least 100); the refreshes stop after the job ended.
    **params
        ``key=`` (the published value shown first), ``follow=`` (fit curves' axes to the
        data at each refresh).

    Returns
    -------
    framescope.dashboard._events.EventsView
        A panel ``Viewer``: display it in a notebook cell or serve it.

    Examples
    --------
    >>> job = fe.submit(streams, tm, VirtualImageOverI0, ImageReducer)  # doctest: +SKIP
    >>> fs.dashboard.events_view(job)  # doctest: +SKIP
    """
    from framescope.dashboard._events import EventsView

    return EventsView(job, period_ms=period_ms, **params)


def ptycho_view(source_or_reconstruction: Any, *, period_ms: int = 500,
                **reconstruct_options: Any) -> Any:
    """The dashboard of a live ptychographic reconstruction: object phase and amplitude,
    probe amplitude and phase (per mode), the error curve, a status line, Stop and Reset.

    Parameters
    ----------
    source_or_reconstruction : xarray.DataArray, live source or framescope.ptycho.Reconstruction
        A source starts a reconstruction (:func:`framescope.ptycho.start`); a running
        ``Reconstruction`` is shown as it is.
    period_ms : int
        Milliseconds between refreshes (at least 100); they stop once it ended.
    **reconstruct_options
        Options of :func:`framescope.ptycho.reconstruct` (``defocus=``, ``iterations=``,
        ``client=``, ...). With a ``Reconstruction``, ``source=`` and these options are what
        Reset starts anew (without ``source=`` Reset is disabled).

    Returns
    -------
    framescope.dashboard._ptycho.PtychoView
        A panel ``Viewer``: display it in a notebook cell or serve it.

    Notes
    -----
    Reset stops the reconstruction and starts a fresh one on the same source with the same
    options. A file restarts from scratch on all its frames; a live source restarts on the
    frames it receives from then on (those received before the reset are not replayed:
    ``start`` cannot be seeded with them).

    Examples
    --------
    >>> arr = fs.datasets.synthetic(scan=(12, 12), det=(32, 32), calibrated=True)  # doctest: +SKIP
    >>> fs.dashboard.ptycho_view(arr, defocus="10 nm", client="inline")  # doctest: +SKIP
    """
    from framescope.dashboard._ptycho import PtychoView, is_reconstruction

    if is_reconstruction(source_or_reconstruction):
        source = reconstruct_options.pop("source", None)
        return PtychoView(source_or_reconstruction, source=source,
                          options=reconstruct_options, period_ms=period_ms)
    from framescope.ptycho import start

    rec = start(source_or_reconstruction, **reconstruct_options)
    return PtychoView(rec, source=source_or_reconstruction, options=reconstruct_options,
                      period_ms=period_ms)


def source_widget(source: ZMQSource | None = None,
                  kind: Literal["panel", "ipywidgets"] = "panel",
                  **params: Any) -> SourceWidget | SourceIPyWidget:
    """A ZeroMQ source widget: endpoint, protocol, scan, connect/disconnect, live status.

    Parameters
    ----------
    source : framescope.live.ZMQSource, optional
        A source to show (it counts as connected; the widget stops it only when the user
        disconnects). Without one the user connects from the widget's fields.
    kind : {"panel", "ipywidgets"}
        :class:`SourceWidget` (panel; ``[dashboard]`` extra) or :class:`SourceIPyWidget`
        (ipywidgets; ``[jupyter]`` extra).
    **params
        Field values and options of the widget, e.g. ``endpoint=``, ``protocol=``,
        ``scan="128x128"``.

    Returns
    -------
    SourceWidget or SourceIPyWidget

    Raises
    ------
    ValueError
        If ``kind`` is not one of the two.

    See Also
    --------
    live : the widget beside the dashboard of the series it receives.

    Examples
    --------
    >>> from framescope.dashboard import source_widget  # doctest: +SKIP
    >>> w = source_widget(endpoint="tcp://127.0.0.1:9999", scan="128x128")  # doctest: +SKIP
    >>> w.on_connect(lambda src: print("connected to", src.endpoint))  # doctest: +SKIP
    >>> w  # a panel component in a notebook cell  # doctest: +SKIP
    """
    if kind == "panel":
        from framescope.dashboard._source_widget import SourceWidget

        return SourceWidget(source, **params)
    if kind == "ipywidgets":
        from framescope.dashboard._source_ipywidget import SourceIPyWidget

        return SourceIPyWidget(source, **params)
    raise ValueError(f"kind: expected 'panel' or 'ipywidgets', found {kind!r}")


def __getattr__(name: str) -> Any:
    # the classes import panel / ipywidgets: only on first use
    if name == "Dashboard":
        from framescope.dashboard._app import Dashboard

        return Dashboard
    if name == "SourceWidget":
        from framescope.dashboard._source_widget import SourceWidget

        return SourceWidget
    if name == "SourceIPyWidget":
        from framescope.dashboard._source_ipywidget import SourceIPyWidget

        return SourceIPyWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))  # lazy names too (autodoc, completion)


class _CallableModule(types.ModuleType):
    """``framescope.dashboard`` is both this subpackage and the function: importing a
    subpackage rebinds the parent's attribute to the module, so the module forwards calls."""

    __signature__ = inspect.signature(dashboard)

    def __call__(self, arr: Any, client: Any = None, **params: Any) -> Dashboard:
        return dashboard(arr, client, **params)


sys.modules[__name__].__class__ = _CallableModule
