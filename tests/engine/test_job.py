"""framescope.submit: one handle for file jobs (here) and stream jobs (tests/live)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.udf import ApplyMasks, MaxFrame, SumFrame


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(11).poisson(5, (6, 5, 12, 12)).astype("uint16")


def test_a_file_job_gives_the_run_result(data):
    arr = framescope.from_array(data)
    job = framescope.submit([SumFrame(), MaxFrame()], arr, client="inline")
    total, peak = job.result(60)
    assert job.done()
    st = job.status
    assert (st.state, st.frames_expected, st.frames_processed) == ("finished", 30, 30)
    np.testing.assert_array_equal(total["sum"].values, data.sum((0, 1), dtype=np.float64))
    np.testing.assert_array_equal(peak["max"].values, data.max((0, 1)))
    assert job.partial()[0].identical(total)
    assert list(job.udfs) == ["0", "1"]


class Slow(ApplyMasks):
    """Waits at every tile until released: a job that is still running."""

    release = threading.Event()

    def process_tile(self, tile, results, state):
        self.release.wait(30)
        super().process_tile(tile, results, state)


def test_a_file_job_can_be_cancelled_and_times_out(data):
    Slow.release.clear()
    roi = np.zeros(data.shape[:2], bool)
    roi[:2] = True
    job = framescope.submit(Slow({"c": fm.disk(6, 6, 3)}), framescope.from_array(data),
                            client="sync", roi=roi)
    try:
        with pytest.raises(TimeoutError, match="no result within"):
            job.result(0.05)
        assert job.status.frames_expected == 10
        assert not job.done()
    finally:
        Slow.release.set()
        job.cancel()
    assert job.done()


def test_bad_sources_and_options(data):
    with pytest.raises(TypeError, match=r"xarray\.DataArray or a live source"):
        framescope.submit(SumFrame(), data)
    job = framescope.submit(SumFrame(), framescope.from_array(data), client="inline")
    with pytest.raises(TypeError, match="only a stream job"):
        job.update(MaxFrame())
    with pytest.raises(TypeError, match="timeout apply to live sources"):
        framescope.run(SumFrame(), framescope.from_array(data), timeout=1)
