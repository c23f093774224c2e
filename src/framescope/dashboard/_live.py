"""The live dashboard: a ZeroMQ source widget beside the dashboard of the series it receives.

The dashboard's analyses (mean and max frame, the virtual detectors, the centre of mass)
run as one stream job (:func:`framescope.submit`) on the source: its analysis thread merges
them batch by batch, and a periodic callback (``refresh_ms``, a few Hz) shows what the job
has published. The job also copies each batch into a
:class:`~framescope.dashboard._store.FrameStore` (one memcpy per frame), the frames behind
the views: a detector drawn or edited mid-series is computed over the frames that arrived,
through the engine, by :class:`~framescope.dashboard._live_state.LiveState`, and joins the
job's analyses from the next series on. Neither side waits for the other, so a slow display
never slows the receiver, and the receiver's counters tell when analysis falls behind.
"""

from __future__ import annotations

import logging
from typing import Any

import panel as pn
import param

from framescope.dashboard._app import Dashboard, load_extensions
from framescope.dashboard._live_state import LiveState, carried_settings, stream_udfs
from framescope.dashboard._store import FrameStore
from framescope.engine import Job, submit

__all__ = ["LiveDashboard"]

log = logging.getLogger(__name__)


class LiveDashboard(pn.viewable.Viewer):
    """Connect to a detector stream and watch virtual images of the series fill in.

    Parameters
    ----------
    source : ZMQSource, optional
        A source to show (connected already or not); without one, the widget's fields say
        where to connect.
    detectors : MaskStack or dict, optional
        Detectors to start with (default: a bright-field disk and an annulus); they carry
        over from series to series.
    max_gib : float
        Largest series whose frames are kept in memory for the views (GiB).
    **params
        ``refresh_ms`` and the source widget's fields (``endpoint``, ``protocol``, ``scan``).
    """

    refresh_ms = param.Integer(default=250, bounds=(100, None),
                               doc="Milliseconds between extensions of the results")

    def __init__(self, source: Any = None, detectors: Any = None, max_gib: float = 4.0,
                 **params: Any) -> None:
        from framescope.dashboard._source_widget import SourceWidget

        load_extensions()
        own = {k: params.pop(k) for k in list(params) if k in self.param}
        super().__init__(**own)
        self.store = FrameStore(int(max_gib * 2**30))
        self.detectors = detectors
        self.dashboard: Dashboard | None = None
        self.job: Job | None = None
        self._udf_keys: dict[str, str] = {}
        self._token = ""
        self._callback: Any = None
        self.message = pn.pane.Markdown("Waiting for a series: connect to a detector stream.",
                                        width=500)
        self.body = pn.Column(self.message)
        # one display loop (here) drives the widget and the series' dashboard
        self.widget = SourceWidget(source, display_loop=False, **params)
        self.widget.param.watch(self._on_connected, "connected")
        self.widget.on_connect(self._attach)

    # ---- receiving ------------------------------------------------------------------------
    def _attach(self, source: Any) -> None:
        """A (new) connected source: run the dashboard's analyses on it, keep its frames."""
        self._detach()
        state = None if self.dashboard is None else self.dashboard.state
        udfs = stream_udfs(state, self.detectors)
        self._udf_keys = {k: u.key for k, u in udfs.items()}
        self.job = submit(udfs, source, on_frames=self.store.add)

    def _detach(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None

    def _follow_detectors(self) -> None:
        """The job runs the current detectors and COM settings from the next series on."""
        if self.job is None or self.dashboard is None:
            return
        udfs = stream_udfs(self.dashboard.state, self.detectors)
        keys = {k: u.key for k, u in udfs.items()}
        if keys != self._udf_keys:
            self.job.update(udfs)
            self._udf_keys = keys

    def _on_connected(self, event: param.parameterized.Event) -> None:
        if not event.new:
            self._detach()

    # ---- display --------------------------------------------------------------------------
    def refresh(self) -> None:
        """The display loop: the widget's status and preview, then the views of a new
        series, or the current one's results extended and what changed sent."""
        self.widget.refresh()
        store = self.store
        if store.error:
            self.message.object = store.error
        if store.data is not None and store.token != self._token:
            self._new_series()
        elif self.dashboard is not None:
            self.dashboard.state.refresh()
            self.dashboard.flush()
        self._follow_detectors()

    def _new_series(self) -> None:
        previous = self.dashboard
        detectors = self.detectors if previous is None else previous.state.masks()
        keep = {} if previous is None else carried_settings(previous.state)
        state = LiveState(self.store, detectors=detectors, job=self.job, **keep)
        self._token = self.store.token
        self.dashboard = Dashboard(state=state, display_loop=False,
                                   tab=0 if previous is None else previous.tab)
        self.body.objects = [self.dashboard]
        if previous is not None:
            previous.close()
        log.debug("live dashboard: series %s", self.store.series)

    def close(self) -> None:
        """Stop receiving, the refresh loop and the dashboard's jobs."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self._detach()
        self.widget.disconnect()
        if self.dashboard is not None:
            self.dashboard.close()

    def _start(self) -> None:
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.refresh,
                                                            period=self.refresh_ms)

    def __panel__(self) -> pn.viewable.Viewable:
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            # after the page has loaded: views made before it would never report ready
            pn.state.onload(self._start)
            pn.state.on_session_destroyed(lambda _ctx: self.close())
        else:
            self._start()
        return pn.Row(self.widget, self.body)
