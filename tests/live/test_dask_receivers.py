"""Receivers as long-running tasks on real dask worker processes (the session LocalCluster).

A simulator process PUSHes a series round-robin to two receiver tasks on two workers; their
partials merge in this process and must equal the offline run and plain numpy.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import zmq

import framescope
import framescope.masks as fm
from framescope.datasets import synthetic
from framescope.engine import disconnect
from framescope.engine._dask_receivers import receive_on_worker
from framescope.engine._wire import decode_message, encode_message
from framescope.live import ZMQSource
from framescope.udf import ApplyMasks, CenterOfMass, SumFrame

from .conftest import simulator_process, until

SCAN, DET = (12, 10), (24, 24)
N = SCAN[0] * SCAN[1]
RING = fm.ring(12, 12, 3, 9)


@pytest.fixture(scope="module")
def data():
    arr = synthetic(scan=SCAN, det=DET, seed=5)
    udfs = {"vd": ApplyMasks({"ring": RING}), "com": CenterOfMass()}
    offline = {name: framescope.run(u, arr, client="inline") for name, u in udfs.items()}
    return arr, np.asarray(arr.values), udfs, offline


def _receiver_keys(client) -> list[str]:
    return [k for keys in client.processing().values() for k in keys
            if str(k).startswith("framescope-receiver")]


def _assert_no_receiver_left(client, job, lost=()) -> None:
    futures = job.runner.launcher.futures
    assert [f.status for f in futures] == [
        "cancelled" if k in lost else "finished" for k in range(len(futures))]
    until(lambda: not _receiver_keys(client), 30, "the scheduler to forget the receivers")


def _assert_equal_offline(live, offline, done, skip: tuple[str, ...] = ()) -> None:
    for name, ds in offline.items():
        for key in ds.data_vars:
            if key not in ("done", *skip):
                want = ds[key].values[done]
                np.testing.assert_array_equal(live[name][key].values[done], want,
                                              err_msg=key)


def test_two_receivers_on_two_workers_equal_offline_and_numpy(client, data):
    arr, frames, udfs, offline = data
    pids = client.run(os.getpid)
    assert len(pids) == 2
    with simulator_process(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                           compression="bslz4", peers=2, source=arr) as (endpoint, _):
        job = framescope.submit(udfs, ZMQSource(endpoint, "dectris-stream2", scan=SCAN),
                                processes=2, client=client)
        try:
            live = job.result(120)
            st, receivers = job.status, job.receivers
        finally:
            job.cancel()
    # each receiver ran in a different worker process and took a share of the frames
    assert {r["where"] for r in receivers} == set(pids)
    assert all(r["pid"] == pids[r["where"]] != os.getpid() for r in receivers)
    assert all(r["frames_received"] > 0 for r in receivers)
    assert sum(r["frames_received"] for r in receivers) == N
    summaries = [f.result() for f in job.runner.launcher.futures]
    assert sorted((s["where"], s["pid"]) for s in summaries) == sorted(pids.items())

    assert st.state == "finished"
    assert (st.frames_received, st.frames_processed, st.gaps, st.dropped) == (N, N, 0, 0)
    assert all(ds.attrs["complete"] and bool(ds["done"].all()) for ds in live.values())
    _assert_equal_offline(live, offline, np.ones(SCAN, bool))
    ref = frames.astype("f8")
    ring = np.einsum("ijkl,kl->ij", ref, RING.rasterize(DET).astype("f8"))
    np.testing.assert_allclose(live["vd"]["intensity"].sel(mask="ring"), ring, rtol=1e-6)
    y, x = np.indices(DET)
    mass = ref.sum((2, 3))
    for name, coord in (("com_y", y - DET[0] // 2), ("com_x", x - DET[1] // 2)):
        np.testing.assert_allclose(live["com"][name], (ref * coord).sum((2, 3)) / mass,
                                   rtol=1e-5, atol=1e-5)
    _assert_no_receiver_left(client, job)


def test_stop_mid_series_keeps_the_partial_result_and_ends_the_tasks(client, data):
    arr, _, udfs, offline = data
    sent = 50  # the simulator stops after these, without an end message
    with simulator_process(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                           peers=2, source=arr, stop_after=sent) as (endpoint, _):
        framescope.connect(client)  # client="default": the connected cluster
        try:
            job = framescope.submit(udfs, ZMQSource(endpoint, "dectris-stream2", scan=SCAN),
                                    processes=2, client="default")
        finally:
            disconnect()  # leaves the session's client open
        assert job.runner.launcher.client is client
        try:
            until(lambda: job.status.frames_processed == sent, 60, "the frames sent")
            assert job.status.state in ("receiving", "stalled")  # no end came
        finally:
            job.cancel()
    res = job.results
    assert all(ds.attrs["state"] == "stopped" and not ds.attrs["complete"]
               for ds in res.values())
    done = res["vd"]["done"].values
    expected = np.arange(N).reshape(SCAN) < sent  # raster order: the first frames
    np.testing.assert_array_equal(done, expected)
    # divergence and curl take neighbours, missing at the edge of the partial scan
    _assert_equal_offline(res, offline, done, skip=("divergence", "curl"))
    _assert_no_receiver_left(client, job)


def test_a_bad_endpoint_is_a_runtime_error_and_leaves_no_task(client):
    src = ZMQSource("tcp://127.0.0.1:notaport", "native", scan=(2, 2))
    with pytest.raises(RuntimeError, match=r"only 0 started.*notaport"):
        framescope.submit(SumFrame(), src, processes=2, client=client)
    until(lambda: not _receiver_keys(client), 30, "the failed receivers to end")


def test_bad_options_are_value_errors(client):
    src = ZMQSource("tcp://127.0.0.1:1", "native", scan=(2, 2))
    with pytest.raises(ValueError, match=r"processes=3: .* has 2 worker"):
        framescope.submit(SumFrame(), src, processes=3, client=client)
    with pytest.raises(ValueError, match=r"merge_host: .* wildcard '0\.0\.0\.0'"):
        framescope.submit(SumFrame(), src, processes=2, client=client,
                          merge_host="0.0.0.0")
    assert not _receiver_keys(client)


def test_a_receiver_task_ends_on_its_own_when_the_merging_side_goes(client):
    """A merging side that answers once, then falls silent; and one that never answers."""
    zctx = zmq.Context.instance()
    ctrl, data = zctx.socket(zmq.ROUTER), zctx.socket(zmq.PULL)
    for sock in (ctrl, data):
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind("tcp://127.0.0.1:0")
    worker = sorted(client.nthreads())[0]
    config = {"endpoint": "tcp://127.0.0.1:1", "protocol": "native",
              "source": {"scan": (2, 2), "order": None}, "end_grace": 0.25,
              "control": ctrl.getsockopt_string(zmq.LAST_ENDPOINT),
              "data": data.getsockopt_string(zmq.LAST_ENDPOINT), "heartbeat_timeout": 1.5}
    udfs = {"0": SumFrame()}
    try:
        fut = client.submit(receive_on_worker, {**config, "worker": 0}, udfs, pure=False,
                            workers=[worker], allow_other_workers=False)
        assert ctrl.poll(60_000)
        identity, *parts = ctrl.recv_multipart()
        head, _ = decode_message(parts)
        assert (head["kind"], head["where"]) == ("hello", worker)
        ctrl.send_multipart([identity, encode_message({"cmd": "ping"})[0]])
        summary = fut.result(timeout=60)  # ends without a stop: silence is enough
        assert (summary["where"], summary["pid"]) == (worker, client.run(os.getpid)[worker])
        assert data.poll(10_000)
        assert decode_message(data.recv_multipart())[0]["kind"] == "bye"

        silent = client.submit(receive_on_worker, {**config, "worker": 1}, udfs, pure=False,
                               workers=[worker], allow_other_workers=False)
        with pytest.raises(RuntimeError, match=r"never answered.*merge_host="):
            silent.result(timeout=60)
    finally:
        ctrl.close()
        data.close()


def test_cli_runs_its_receivers_on_the_cluster(client, data, tmp_path):
    from xarray import open_dataset

    from .test_cli import parse

    arr, _, _, offline = data
    out = tmp_path / "out.nc"
    with simulator_process(protocol="dectris-stream2", scan=SCAN, det=DET, rate=0,
                           peers=2, source=arr) as (endpoint, _):
        args = parse("live", "--connect", endpoint, "--protocol", "dectris-stream2",
                     "--scan", f"{SCAN[0]}x{SCAN[1]}", "--mask", "ring:12,12,3,9",
                     "--processes", "2", "--scheduler", client.scheduler.address,
                     "--out", str(out), "-q")
        assert args.func(args) == 0
    with open_dataset(out, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["intensity"].values[..., 0],
                                      offline["vd"]["intensity"].values[..., 0])
        assert ds.attrs["state"] == "finished"
    until(lambda: not _receiver_keys(client), 30, "the scheduler to forget the receivers")
    bad = parse("live", "--scheduler", client.scheduler.address, "--mask", "ring:1,1,0,1",
                "--out", str(tmp_path / "no.nc"))
    assert bad.func(bad) == 2  # --scheduler without --processes > 1


def test_a_killed_worker_is_named_and_the_other_receiver_finishes(client, data):
    """SIGKILL one worker process mid-series: the status names it, the other receiver goes
    on, the merged part is exact, the lost task is released. Last in the module: the nanny
    restarts the worker."""
    arr, _frames, udfs, offline = data
    pids = client.run(os.getpid)
    with simulator_process(protocol="dectris-stream2", scan=SCAN, det=DET, rate=40,
                           peers=2, source=arr) as (endpoint, _):
        job = framescope.submit(udfs, ZMQSource(endpoint, "dectris-stream2", scan=SCAN),
                                processes=2, client=client)
        try:
            until(lambda: job.status.frames_processed >= 20, 60, "first frames")
            victim = job.receivers[0]
            os.kill(pids[victim["where"]], signal.SIGKILL)
            until(lambda: job.status.receivers_lost == 1, 10, "the lost receiver")
            assert victim["where"] in job.status.last_error
            live = job.result(60)
            final = job.status
        finally:
            job.cancel()
    assert final.state in ("finished", "stopped")
    done = live["vd"]["done"].values
    assert final.frames_processed == done.sum() > 20
    _assert_equal_offline(live, offline, done, skip=("divergence", "curl"))
    _assert_no_receiver_left(client, job, lost={0})
    client.wait_for_workers(2, timeout=60)
