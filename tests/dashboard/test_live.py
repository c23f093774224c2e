"""The live dashboard on a real ZeroMQ stream from a simulator process."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import pytest

import framescope.masks as fm

from ._reference import einsum

pytest.importorskip("zmq")

DETECTORS = {"bf": fm.disk(16, 16, 5), "adf": fm.ring(16, 16, 8, 14)}


def _publish(q, kwargs) -> None:
    from framescope.live import simulate_stream

    result = simulate_stream("tcp://127.0.0.1:0", on_bound=q.put, **kwargs)
    q.put(result["frames_sent"])


@contextlib.contextmanager
def simulator(**kwargs) -> Iterator[str]:
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["framescope.live"])
    q = ctx.Queue()
    p = ctx.Process(target=_publish, args=(q, kwargs), daemon=True)
    p.start()
    try:
        yield q.get(timeout=60)
    finally:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
            p.join()


def _until(cond, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout  # guards against hangs; no timing asserted
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_live_dashboard_fills_in_the_streamed_scan(small, monkeypatch):
    """Images, mean and max frame come from the stream job: nothing is run again over the
    kept frames (that is only for detectors drawn or edited mid-series)."""
    import framescope as fs
    from framescope.dashboard._live import LiveDashboard
    from framescope.dashboard._live_state import LiveState
    from framescope.live import ZMQSource

    reruns = []
    rerun = LiveState._iter_run
    monkeypatch.setattr(LiveState, "_iter_run", lambda self, udf, roi=None: (
        reruns.append(type(udf).__name__), rerun(self, udf, roi))[1])
    arr, frames = small
    with simulator(source=arr, protocol="dectris-stream2", rate=0, first_series=3) as ep:
        source = ZMQSource(ep, protocol="dectris-stream2")
        dash = fs.dashboard(source, detectors=DETECTORS)
        assert isinstance(dash, LiveDashboard)
        try:
            dash.__panel__().get_root()  # Bokeh models, as a session has them
            assert dash.widget.connected  # a given source counts as connected: it receives
            _until(lambda: dash.store.received() is not None
                   and dash.store.received().all(), "all frames kept")

            def complete() -> bool:
                dash.refresh()  # what the periodic callback does
                st = dash.dashboard.state if dash.dashboard else None
                return (st is not None and st.jobs.wait(timeout=60)
                        and all(st.image(n) is not None and st.image(n).done == 1.0
                                for n in DETECTORS))

            _until(complete, "complete virtual images")
            st = dash.dashboard.state
            assert dash.store.series == 3
            for name, spec in DETECTORS.items():
                np.testing.assert_allclose(st.image(name).image, einsum(frames, spec),
                                           rtol=1e-6)
            np.testing.assert_allclose(st.summary("mean"), frames.mean(axis=(0, 1)),
                                       rtol=1e-9)
            np.testing.assert_array_equal(st.summary("max"), frames.max(axis=(0, 1)))
            dash.dashboard.flush()
            assert dash.dashboard.progress.value == 100
            assert sorted(dash.job.udfs) == ["max", "sum", "vd"]
            assert reruns == []
            # a detector drawn mid-series: computed over the kept frames, through the engine
            new = st.add("disk", select=False, cy=10, cx=12, r=3).name
            _until(lambda: (dash.refresh(), st.jobs.wait(timeout=60))
                   and st.image(new) is not None and st.image(new).done == 1.0,
                   "the new detector's image")
            np.testing.assert_allclose(st.image(new).image,
                                       einsum(frames, st.detector(new).spec()), rtol=1e-6)
            assert reruns == ["ApplyMasks"]
            dash.refresh()
            assert new in dash.job.runner.analysis._pending[0]["vd"].masks  # next series
        finally:
            dash.close()
    assert not dash.widget.connected


def test_a_bad_endpoint_is_reported_and_leaves_no_thread():
    import threading

    from framescope.dashboard._live import LiveDashboard

    def analysis_threads() -> int:
        return sum(t.name == "framescope-analysis" for t in threading.enumerate())

    before = analysis_threads()
    dash = LiveDashboard(endpoint="tcp://nohost:xx", protocol="dectris-stream2")
    try:
        assert not dash.widget.connect()
        assert "tcp://nohost:xx" in dash.widget.error
        assert not dash.widget.connected
        assert dash.job is None
        assert analysis_threads() == before
    finally:
        dash.close()
