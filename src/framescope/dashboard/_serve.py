"""``framescope serve``: the dashboard as a Bokeh/panel server on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import xarray as xr

__all__ = ["DEMO", "demo_data", "local_client", "serve"]

log = logging.getLogger(__name__)

#: the demo dataset: ``framescope.datasets.synthetic(**DEMO)`` (tests use it as reference)
DEMO: dict[str, Any] = {"scan": (64, 64), "det": (128, 128), "seed": 0}
#: small partitions so the demo's images visibly fill in, 16 of them
DEMO_PARTITION_MIB = 8


def demo_data() -> xr.DataArray:
    """The built-in synthetic dataset served by ``framescope serve --demo``, with its exact
    calibration (detector in mrad, scan in nm; the dashboard's units toggle shows px)."""
    from framescope.datasets import synthetic

    return synthetic(**DEMO, partition_mib=DEMO_PARTITION_MIB, calibrated=True)


def local_client(n_workers: int | None = None) -> Any:
    """A ``LocalCluster`` of single-threaded worker processes on 127.0.0.1 and its client,
    the process's default one (the dask dashboard on a free port of 127.0.0.1)."""
    from distributed import Client, LocalCluster

    n = n_workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0")
    return Client(cluster)


def serve(
    arr: xr.DataArray,
    *,
    port: int = 5006,
    address: str = "127.0.0.1",
    client: Any = None,
    persist: bool = False,
    websocket_origin: list[str] | None = None,
    prefix: str = "",
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard for ``arr`` until interrupted (Ctrl-C or SIGTERM).

    Every browser tab gets its own dashboard on the same data and client.

    Parameters
    ----------
    arr : xarray.DataArray
        The frames.
    port : int
        TCP port; 0 picks a free one (the printed URL has it).
    address : str
        Interface to bind; 127.0.0.1 (default) is reachable from this machine only.
    client : None, "inline", str or distributed.Client
        Where jobs run (see :func:`framescope.run`).
    persist : bool
        Load the frames into the cluster's memory first, so an edit costs only the mask
        product.
    websocket_origin : list of str, optional
        Extra ``host:port`` origins allowed to connect (when served behind a proxy);
        ``"*"`` allows any.
    prefix : str
        URL path the app is served under, e.g. ``/user/alice/framescope`` behind
        jupyter-server-proxy with ``absolute_url`` (page, resources and websocket all
        below it); default the root.
    on_start : callable, optional
        Called with the URL once the server listens (default: print it).
    """

    from framescope.dashboard._app import Dashboard, load_extensions

    load_extensions()
    if persist:
        arr = arr.fs.persist(client)

    def app() -> Dashboard:
        return Dashboard(arr, client=client)

    _run_server(app, port=port, address=address, websocket_origin=websocket_origin,
                prefix=prefix, on_start=on_start)


def serve_live(
    endpoint: str,
    protocol: str = "dectris-stream2",
    *,
    scan: tuple[int, int] | None = None,
    port: int = 5006,
    address: str = "127.0.0.1",
    websocket_origin: list[str] | None = None,
    prefix: str = "",
    on_start: Callable[[str], None] | None = None,
) -> None:
    """Serve the live dashboard for a detector stream until interrupted.

    The first browser tab connects to ``endpoint`` at once. A PUSH socket deals its frames
    round-robin to every PULL socket connected, so a further tab opened while one is
    receiving gets the source widget with the fields filled in, unconnected: connecting it
    would split the frames between the tabs.

    Parameters
    ----------
    endpoint, protocol, scan
        As for :class:`framescope.live.ZMQSource`.
    port, address, websocket_origin, prefix, on_start
        As for :func:`serve`.
    """
    from framescope.dashboard._app import load_extensions
    from framescope.dashboard._live import LiveDashboard
    from framescope.dashboard._source_display import format_scan

    load_extensions()
    sessions: list[LiveDashboard] = []

    def app() -> LiveDashboard:
        dash = LiveDashboard(endpoint=endpoint, protocol=protocol, scan=format_scan(scan))
        if not any(d.widget.connected for d in sessions):
            dash.widget.connect()
        sessions[:] = [d for d in sessions if d.widget.connected] + [dash]
        return dash

    _run_server(app, port=port, address=address, websocket_origin=websocket_origin,
                prefix=prefix, on_start=on_start)


def _run_server(app: Callable[[], Any], *, port: int, address: str,
                websocket_origin: list[str] | None, prefix: str,
                on_start: Callable[[str], None] | None) -> None:
    """Serve ``app`` (one per browser tab) until Ctrl-C or SIGTERM."""
    import panel as pn

    extra = []
    if prefix.strip("/"):
        # Bokeh serves /favicon.ico at the root only, panel's page asks for it below the prefix
        from panel.io.resources import DIST_DIR
        from tornado.web import StaticFileHandler

        extra.append((r"/(favicon\.ico)", StaticFileHandler, {"path": str(DIST_DIR / "images")}))
    server = pn.serve(app, port=port, address=address, show=False, start=False,
                      title="framescope", verbose=False,
                      websocket_origin=websocket_origin or None, prefix=prefix,
                      extra_patterns=extra)
    url = f"http://{address}:{server.port}{server.prefix}/"
    (on_start or (lambda u: print(f"framescope dashboard: {u}", flush=True)))(url)
    loop = server.io_loop.asyncio_loop

    def stop(*_: Any) -> None:
        loop.call_soon_threadsafe(loop.stop)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
        log.debug("dashboard server on %s stopped", url)
