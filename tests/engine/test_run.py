from __future__ import annotations

import time

import numpy as np
import pytest

import framescope
from framescope.engine import iter_run, run
from framescope.udf import UDF, Buffer, FrameStats, SumFrame


@pytest.fixture(params=["uint8", "uint16", "uint32", "float32"])
def dataset(request, tmp_path):
    """A 13x17 scan of 9x7 frames as a raw file, partitions of 3 rows (edges inside rows)."""
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 200, size=(13, 17, 9, 7)).astype(request.param)
    path = tmp_path / "d.raw"
    path.write_bytes(ref.tobytes())
    arr = framescope.open(path, shape=ref.shape, dtype=request.param, chunks=3)
    return arr, ref


def _arrays(arr, ref):
    """The same data as file source, in-memory blocks and blocks split along scan_x."""
    yield "file", arr
    yield "memory", framescope.from_array(ref, chunks=(4, 17, 9, 7))
    yield "xblocks", framescope.from_array(ref, chunks=(5, 6, 9, 7))


@pytest.mark.parametrize("executor", ["inline", "sync", "dask"])
def test_sum_frame_matches_numpy(dataset, executor, client):
    arr, ref = dataset
    for label, a in _arrays(arr, ref):
        res = run(SumFrame(), a, client=client if executor == "dask" else executor)
        np.testing.assert_array_equal(res["sum"].values, ref.sum((0, 1), dtype="f8"),
                                      err_msg=label)
        assert int(res["n"]) == 13 * 17
        assert bool(res["done"].all())
        assert res["sum"].dims == ("det_y", "det_x")


def test_frame_stats_match_numpy(dataset, client):
    arr, ref = dataset
    flat = ref.reshape(-1, 9, 7).astype("f8")
    for c in ("inline", client):
        res = run(FrameStats(), arr, client=c)
        np.testing.assert_allclose(res["mean"], flat.mean(0), rtol=1e-12)
        np.testing.assert_allclose(res["var"], flat.var(0), rtol=1e-10)
        np.testing.assert_allclose(res["std"], flat.std(0), rtol=1e-10)
        np.testing.assert_array_equal(res["min"], flat.min(0))
        np.testing.assert_array_equal(res["max"], flat.max(0))


def test_variance_is_stable_for_a_large_offset():
    rng = np.random.default_rng(0)
    ref = (1e8 + rng.normal(size=(8, 8, 4, 4))).astype("f8")
    res = run(FrameStats(), framescope.from_array(ref, chunks=(1, 8, 4, 4)), client="inline")
    np.testing.assert_allclose(res["var"], ref.reshape(-1, 4, 4).var(0), rtol=1e-6)


def test_roi_restricts_frames(dataset, client):
    arr, ref = dataset
    roi = np.zeros((13, 17), bool)
    roi[2:9, 3:11] = True
    roi[12, 16] = True
    for c in ("inline", client):
        for label, a in _arrays(arr, ref):
            res = run(SumFrame(), a, roi=roi, client=c)
            np.testing.assert_array_equal(res["sum"], ref[roi].sum(0, dtype="f8"), err_msg=label)
            assert int(res["n"]) == roi.sum()
            np.testing.assert_array_equal(res["done"], roi)


class FrameMax(UDF):
    """nav buffer: one value per scan position, with a fill outside the ROI."""

    def buffers(self, meta):
        return {"max": Buffer("nav", "float32", fill=np.nan)}

    def process_tile(self, tile, results, state):
        results["max"][:] = tile.flat.max(axis=1)


def test_nav_buffers_are_placed_by_scan_position(dataset, client):
    arr, ref = dataset
    roi = np.zeros((13, 17), bool)
    roi[::2, 1::3] = True
    expected = np.where(roi, ref.max((2, 3)), np.nan).astype("f4")
    for c in ("inline", client):
        for label, a in _arrays(arr, ref):
            res = run(FrameMax(), a, roi=roi, client=c)
            np.testing.assert_array_equal(res["max"].values, expected, err_msg=label)
            assert res["max"].dims == ("scan_y", "scan_x")


@pytest.mark.parametrize("executor", ["inline", "sync"])
def test_iter_run_fills_progressively(dataset, executor):
    arr, ref = dataset
    seen = []
    for partial in iter_run(FrameMax(), arr, client=executor):
        done = partial["done"].values
        seen.append(int(done.sum()))
        got = partial["max"].values
        np.testing.assert_array_equal(got[done], ref.max((2, 3))[done])
        assert np.isnan(got[~done]).all()
        time.sleep(0.02)  # a consumer slower than the tasks: completed ones merge
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)  # every yield brings something new
    if executor == "sync":  # one task at a time: a yield per partition
        assert len(seen) == len(arr.data.chunks[0])
    assert seen[-1] == 13 * 17


def test_inline_tasks_split_partitions_across_threads(dataset):
    """One big partition still becomes a task per thread; positions land in place."""
    from framescope.engine._executor import inline_pool
    from framescope.engine._run import _split

    arr, ref = dataset
    one = framescope.open(arr.encoding["framescope_source"].reader.path, shape=ref.shape,
                          dtype=ref.dtype, chunks=13)  # a single partition
    assert one.data.npartitions == 1
    plan = [("source", None, np.arange(13 * 17))]
    tasks = _split(plan, 2 * inline_pool()._max_workers)
    assert len(tasks) == 2 * inline_pool()._max_workers
    np.testing.assert_array_equal(np.concatenate([pos for _, _, pos in tasks]),
                                  np.arange(13 * 17))
    snaps = list(iter_run(FrameTotals(), one, client="inline"))
    np.testing.assert_array_equal(snaps[-1]["total"],
                                  ref.reshape(13, 17, -1).sum(-1, dtype="f8"))


def test_iter_run_cancel_on_close(dataset, client):
    arr, _ = dataset
    gen = iter_run(SumFrame(), arr, client=client)
    first = next(gen)
    assert 0 < int(first["done"].sum()) <= 13 * 17
    gen.close()  # cancels the rest, no error


def test_persisted_data_gives_the_same_result(dataset, client):
    arr, ref = dataset
    kept = arr.copy(data=client.persist(arr.data))
    res = run(SumFrame(), kept, client=client)
    np.testing.assert_array_equal(res["sum"], ref.sum((0, 1), dtype="f8"))


class FrameTotals(UDF):
    """Each frame's total: a nav result that shows which frame landed where."""

    def buffers(self, meta):
        return {"total": Buffer("nav", "float64")}

    def process_tile(self, tile, results, state):
        results["total"][:] = tile.flat.sum(axis=1, dtype="f8")


@pytest.mark.parametrize("executor", ["inline", "dask"])
def test_row_strided_blocks_are_read_in_place(dataset, executor, client):
    """A column slice of in-memory data gives strided blocks (no full copy per job)."""
    _, ref = dataset
    arr = framescope.from_array(ref, chunks=(4, 17, 9, 7)).isel(scan_x=slice(2, 15))
    want = ref[:, 2:15]
    roi = np.random.default_rng(3).random(want.shape[:2]) < 0.7
    c = "inline" if executor == "inline" else client
    res = run(FrameTotals(), arr, client=c, roi=roi)
    totals = want.reshape(*want.shape[:2], -1).sum(-1, dtype="f8")
    np.testing.assert_array_equal(res["total"].values[roi], totals[roi])
    np.testing.assert_array_equal(run(SumFrame(), arr, client=c)["sum"],
                                  want.sum((0, 1), dtype="f8"))


def test_workers_keep_one_open_source_per_file(dataset, client):
    """Tasks reuse the worker's reader (and its memory map) instead of mapping per task."""
    from framescope.engine._tasks import local_source

    arr, ref = dataset
    first = run(SumFrame(), arr, client=client)
    again = run(SumFrame(), arr, client=client)
    np.testing.assert_array_equal(again["sum"], first["sum"])
    np.testing.assert_array_equal(again["sum"], ref.sum((0, 1), dtype="f8"))

    def kept(dask_worker=None) -> int:
        from framescope.engine import _tasks

        return len(_tasks._SOURCES)

    assert all(n >= 1 for n in client.run(kept).values())
    src = framescope.io._lazy.source_of(arr)
    assert local_source(src) is local_source(src)


class CountedPrepare(FrameTotals):
    calls = 0
    share_state = True

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def params(self):
        return {"scale": self.scale}

    def prepare(self, meta):
        type(self).calls += 1
        return self.scale

    def process_tile(self, tile, results, state):
        results["total"][:] = tile.flat.sum(axis=1, dtype="f8") * state


def test_shared_state_is_prepared_once_per_process_and_key(dataset):
    arr, ref = dataset
    totals = ref.reshape(13, 17, -1).sum(-1, dtype="f8")
    CountedPrepare.calls = 0
    for _ in range(2):
        res = run(CountedPrepare(2.0), arr, client="inline")
        np.testing.assert_array_equal(res["total"], 2 * totals)
    assert CountedPrepare.calls == 1
    res = run(CountedPrepare(3.0), arr, client="inline")  # new params: a new state
    np.testing.assert_array_equal(res["total"], 3 * totals)
    assert CountedPrepare.calls == 2


class BadShape(UDF):
    def buffers(self, meta):
        return {"x": Buffer("nav", "float32")}

    def process_tile(self, tile, results, state):
        results["x"] = np.zeros(3)  # rebinding instead of writing in place


def test_udf_buffer_mismatch_is_a_clear_error(dataset):
    arr, _ = dataset
    with pytest.raises(ValueError, match=r"BadShape: buffer 'x' \(nav\) has shape \(3,\)"):
        run(BadShape(), arr, client="inline")


def test_udf_key_is_stable():
    assert SumFrame().key == SumFrame().key
    assert SumFrame().key != FrameStats().key


def test_iter_run_interval_skips_partials_but_never_the_result(dataset):
    arr, ref = dataset
    snaps = list(iter_run(FrameMax(), arr, client="sync", interval=60.0))
    assert len(snaps) == 1  # done long before the first partial was due
    assert bool(snaps[0]["done"].all())
    np.testing.assert_array_equal(snaps[0]["max"], ref.max((2, 3)).astype("f4"))
    assert len(list(iter_run(FrameMax(), arr, client="sync"))) == len(arr.data.chunks[0])


def test_a_computed_file_array_runs_from_memory(tmp_path):
    """``arr.compute()`` keeps the file's encoding but holds numpy frames: the engine reads
    them from memory (it used to take the file path and fail on ``.chunks``)."""
    frames = np.arange(3 * 4 * 8 * 8, dtype=np.uint16).reshape(12, 8, 8)
    np.save(tmp_path / "f.npy", frames)
    arr = framescope.open(tmp_path / "f.npy", scan=(3, 4)).compute()
    assert framescope.io._lazy.source_of(arr) is None
    res = framescope.run(SumFrame(), arr, client="inline")
    np.testing.assert_array_equal(res["sum"].values, frames.sum(0, dtype="f8"))
