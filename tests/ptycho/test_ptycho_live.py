"""Live ptychography: the solver iterates on a stream's frames while they arrive, replays
offline to the same result, and a scan stopped midway leaves a usable reconstruction."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from _ptycho_helpers import illuminated, phase_r, problem

from framescope.ptycho import reconstruct

pytest.importorskip("zmq")

from framescope.live import ZMQSource, simulate_stream


@contextlib.contextmanager
def simulator(**kwargs) -> Iterator[str]:
    """``simulate_stream(**kwargs)`` in a thread on a free port; yields the endpoint."""
    bound: queue.Queue = queue.Queue()
    t = threading.Thread(target=simulate_stream, args=("tcp://127.0.0.1:0",),
                         kwargs={"on_bound": bound.put, **kwargs}, daemon=True)
    t.start()
    try:
        yield bound.get(timeout=60)
    finally:
        t.join(timeout=30)


def test_live_equals_offline_replay():
    arr, reader, defocus = problem()
    updates = []
    with simulator(protocol="dectris-stream2", scan=arr.shape[:2], det=arr.shape[2:],
                   rate=400, source=arr) as endpoint:
        live = reconstruct(ZMQSource(endpoint, "dectris-stream2"), iterations=8,
                           defocus=defocus, timeout=60, callback=updates.append,
                           update_every=2)
    n = arr.sizes["scan_y"] * arr.sizes["scan_x"]
    assert live.attrs["complete"] == 1
    assert live.attrs["live"] == 1
    assert live["measured"].all()
    sweeps = live.attrs["iterations"]
    # 8 sweeps over the whole scan after its end, beside those run while frames came
    assert (live["positions_per_iteration"].values[-8:] == n).all()
    assert sweeps == live.sizes["iteration"] >= 8
    assert updates
    assert updates[0].attrs["live_partial"] == 1
    # the same frames, the same sweeps over the same positions in the same order
    offline = reconstruct(arr, iterations=sweeps, defocus=defocus, client="inline",
                          schedule=live["first_iteration"].values)
    np.testing.assert_array_equal(offline["positions_per_iteration"],
                                  live["positions_per_iteration"])
    np.testing.assert_allclose(offline["object_phase"], live["object_phase"], atol=1e-5)
    np.testing.assert_allclose(offline["probe_amplitude"], live["probe_amplitude"],
                               rtol=1e-5, atol=1e-5 * float(live["probe_amplitude"].max()))
    np.testing.assert_allclose(offline["error"], live["error"], rtol=1e-5)
    assert phase_r(live["object_phase"].values, reader.phase, illuminated(live)) >= 0.95


def test_stop_mid_scan_leaves_a_usable_partial_reconstruction():
    arr, reader, defocus = problem()
    sent = 160  # of 256: ten of sixteen rows, then the detector goes quiet
    stop = threading.Event()

    def enough(ds):  # stop 10 sweeps after every sent frame is in
        full = ds["positions_per_iteration"].values == sent
        if full.sum() >= 10:
            stop.set()

    with simulator(protocol="dectris-stream2", scan=arr.shape[:2], det=arr.shape[2:],
                   rate=2000, source=arr, stop_after=sent) as endpoint:
        ds = reconstruct(ZMQSource(endpoint, "dectris-stream2"), iterations=50,
                         defocus=defocus, timeout=60, callback=enough, update_every=1,
                         stop=stop)
    assert ds.attrs["stopped"] == 1
    assert ds.attrs["complete"] == 0
    measured = ds["measured"].values
    assert measured.sum() == sent
    assert measured[:10].all()
    assert not measured[10:].any()
    r = phase_r(ds["object_phase"].values, reader.phase, illuminated(ds))
    assert r >= 0.95, r
