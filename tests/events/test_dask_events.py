"""Event workers as long-running tasks on real dask worker processes (the session cluster)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

import framescope.events as fe
import framescope.masks as fm
from framescope.events._simulate import simulate_streams
from framescope.events.examples import ImageReducer, VirtualImageOverI0

DET = (16, 16)
MASKS = {"ring": fm.ring(8, 8, 2, 6)}


def _params(scan):
    return {"masks": {k: m.to_dict() for k, m in MASKS.items()}, "scan": list(scan)}


def _want(sim, n):
    frames = np.stack([sim.truth["detector"][k] for k in range(n)]).astype("f8")
    i0 = np.array([sim.truth["i0"][k] for k in range(n)])
    return np.einsum("nij,ij->n", frames, MASKS["ring"].rasterize(DET).astype("f8")) / i0


def _streams(sim):
    return {n: (sim.endpoints[n], sim.protocols[n]) for n in ("detector", "i0")}


def test_two_dask_workers_equal_numpy_and_parameters_reach_them(client):
    scan = (6, 10)
    n = scan[0] * scan[1]
    pids = client.run(os.getpid)
    tm = fe.TriggerMap.per_point(n, {"detector": 1, "i0": 1})
    with simulate_streams(n_points=n, det=DET, rates={"detector": 20.0}) as sim:
        job = fe.submit(_streams(sim), tm, VirtualImageOverI0, ImageReducer, workers=2,
                        client=client, parameters=_params(scan), max_inflight=4)
        hellos = dict(job.workers.hellos)
        deadline = time.monotonic() + 30
        while job.status["formed"] < 15 and time.monotonic() < deadline:
            time.sleep(0.01)  # formed at the stream's pace: 15 of 60 in the first second
        # a mask change mid-scan: events sent after it use it, and say so
        job.set_parameters(masks={"ring": fm.ring(8, 8, 0, 6).to_dict()})
        out = job.result(60)
    assert {h["pid"] for h in hellos.values()} == set(pids.values())
    assert os.getpid() not in {h["pid"] for h in hellos.values()}
    st = job.status
    assert st["state"] == "finished"
    assert st["reduced"] == n
    assert st["incomplete"] == 0
    assert st["workers"]["kind"] == "dask task"
    wide = np.einsum("nij,ij->n", np.stack([sim.truth["detector"][k] for k in range(n)])
                     .astype("f8"), fm.ring(8, 8, 0, 6).rasterize(DET).astype("f8")) / \
        np.array([sim.truth["i0"][k] for k in range(n)])
    narrow = _want(sim, n)
    got = out["image"][0].ravel()
    switched = ~np.isclose(got, narrow, rtol=1e-6)
    assert 0 < switched.sum() <= n - 15  # some events before the change, some after
    np.testing.assert_allclose(got[switched], wide[switched], rtol=1e-6)
    first = np.argmax(switched)
    assert switched[first:].all()  # in event order: one switch


def test_a_killed_dask_worker_is_named_and_its_events_go_to_the_other(client):
    """Last in the module: the nanny restarts the worker."""
    scan = (8, 10)
    n = scan[0] * scan[1]
    pids = client.run(os.getpid)
    tm = fe.TriggerMap.per_point(n, {"detector": 1, "i0": 1})
    with simulate_streams(n_points=n, det=DET, rates={"detector": 100.0}) as sim:
        job = fe.submit(_streams(sim), tm, VirtualImageOverI0, ImageReducer, workers=2,
                        client=client, parameters=_params(scan), max_inflight=8)
        victim = job.workers.hellos[0]
        deadline = time.monotonic() + 30
        while job.status["reduced"] < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(victim["pid"], signal.SIGKILL)
        out = job.result(60)
    st = job.status
    assert 0 in st["workers"]["lost"]
    assert victim["where"] in st["workers"]["lost"][0]
    assert st["reduced"] == n
    assert st["incomplete"] == 0
    # the reducer saw every event once; the lost worker's in-flight events were re-sent
    np.testing.assert_allclose(out["image"][0].ravel(), _want(sim, n), rtol=1e-6)
    assert out["done"].all()
    assert pids  # the cluster had two workers when it started
    client.wait_for_workers(2, timeout=60)
