from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import framescope
from framescope.engine import iter_run
from framescope.udf import SumFrame, Tile


class SlowSum(SumFrame):
    """SumFrame that takes a while per tile, so a worker can be killed mid-job."""

    def process_tile(self, tile: Tile, results, state) -> None:
        time.sleep(0.05)
        super().process_tile(tile, results, state)


@pytest.mark.timeout(120)
def test_killed_worker_costs_a_retry_not_the_job(tmp_path):
    from distributed import Client, LocalCluster

    ref = np.random.default_rng(9).integers(0, 1000, (24, 8, 16, 16)).astype("uint16")
    path = tmp_path / "d.npy"
    np.save(path, ref)
    arr = framescope.open(path, chunks=1)  # 24 partitions of one row
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=":0", host="127.0.0.1") as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        victim = next(iter(pids.values()))
        killed = False
        snapshots = []
        for seen, snapshot in enumerate(iter_run(SlowSum(), arr, client=client), 1):
            snapshots.append(snapshot)
            if seen == 3:
                os.kill(victim, signal.SIGKILL)
                killed = True
        assert killed
        last = snapshots[-1]
        np.testing.assert_array_equal(last["sum"].values, ref.sum((0, 1), dtype="f8"))
        assert int(last["n"]) == 24 * 8
        assert bool(last["done"].all())
