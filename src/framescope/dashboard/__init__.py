"""Interactive dashboard: draw virtual detectors on a frame and watch the images fill in.

``framescope.dashboard(arr)`` (this module is callable, so ``fs.dashboard(arr)`` works
whether or not the subpackage was imported first) returns a panel component that renders in
a JupyterLab cell and is servable with ``panel serve``; ``framescope serve --demo`` serves it
on the built-in synthetic dataset. Needs the ``[dashboard]`` extra (panel, holoviews,
bokeh); importing this package does not import them, so dask workers can unpickle the
dashboard's UDFs without panel.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framescope.dashboard._app import Dashboard

__all__ = ["Dashboard", "dashboard", "live"]


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


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        from framescope.dashboard._app import Dashboard

        return Dashboard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``framescope.dashboard`` is both this subpackage and the function: importing a
    subpackage rebinds the parent's attribute to the module, so the module forwards calls."""

    __signature__ = inspect.signature(dashboard)

    def __call__(self, arr: Any, client: Any = None, **params: Any) -> Dashboard:
        return dashboard(arr, client, **params)


sys.modules[__name__].__class__ = _CallableModule
