"""Several UDFs in one pass: each tile read once, each UDF's result as if it ran alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.engine import iter_run, run
from framescope.io._lazy import to_dataarray
from framescope.io._raw import RawReader
from framescope.udf import ApplyMasks, CenterOfMass, FrameStats, MaxFrame, SumFrame


class CountingReader(RawReader):
    """A raw reader that counts the bytes it reads and never hands out memory-mapped views."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bytes_read = 0
        self._count_lock = threading.Lock()

    def view(self, start: int, stop: int) -> None:  # every frame goes through _read
        return None

    def _read(self, start: int, stop: int, out: np.ndarray) -> None:
        super()._read(start, stop, out)
        with self._count_lock:
            self.bytes_read += out.nbytes


@pytest.fixture
def counted(tmp_path):
    ref = np.random.default_rng(3).integers(0, 300, size=(9, 11, 12, 10)).astype("u2")
    path = tmp_path / "c.raw"
    path.write_bytes(ref.tobytes())
    reader = CountingReader(str(path), shape=(99, 12, 10), dtype="u2")
    return to_dataarray(reader, scan=(9, 11), chunks=2), reader, ref


@pytest.mark.parametrize("executor", ["inline", "sync"])
def test_several_udfs_read_each_byte_once(counted, executor):
    arr, reader, ref = counted
    ring = fm.ring(6, 5, 1, 4)
    udfs = [SumFrame(), MaxFrame(), FrameStats(), ApplyMasks(ring), CenterOfMass()]
    total, mx, stats, vi, com = run(udfs, arr, client=executor)
    assert reader.bytes_read == ref.nbytes  # one pass for five analyses
    np.testing.assert_array_equal(total["sum"], ref.sum((0, 1), dtype="f8"))
    np.testing.assert_array_equal(mx["max"], ref.max((0, 1)))
    np.testing.assert_allclose(stats["std"], ref.reshape(-1, 12, 10).std(0), rtol=1e-10)
    np.testing.assert_allclose(vi["intensity"][..., 0],
                               (ref * ring.rasterize((12, 10))).sum((2, 3)), rtol=1e-6)
    alone = run(CenterOfMass(), framescope.from_array(ref), client=executor)
    for key in ("com_y", "com_x", "divergence", "curl"):
        np.testing.assert_array_equal(com[key], alone[key], err_msg=key)
    assert [ds.attrs["udf"] for ds in (total, mx, stats, vi, com)] == \
        ["SumFrame", "MaxFrame", "FrameStats", "ApplyMasks", "CenterOfMass"]


def test_a_dict_of_udfs_gives_named_results_and_iter_run_progresses(counted):
    arr, reader, ref = counted
    roi = np.zeros((9, 11), bool)
    roi[1:7, 2:10] = True
    seen = []
    for part in iter_run({"bf": ApplyMasks(fm.disk(6, 5, 3)), "sum": SumFrame()}, arr,
                         roi=roi, client="inline"):
        assert set(part) == {"bf", "sum"}
        np.testing.assert_array_equal(part["bf"]["done"], part["sum"]["done"])
        done = part["bf"]["done"].values
        assert np.isnan(part["bf"]["intensity"].values[~done]).all()
        seen.append(int(done.sum()))
    assert seen == sorted(seen)
    assert seen[-1] == roi.sum()
    assert reader.bytes_read == ref[roi].nbytes
    np.testing.assert_array_equal(part["sum"]["sum"], ref[roi].sum(0, dtype="f8"))


def test_the_same_udf_twice_and_on_the_cluster(counted, client):
    _, _, ref = counted
    arr = framescope.from_array(ref, chunks=(3, 11, 12, 10))
    a, b = fm.ring(6, 5, 1, 4), fm.disk(6, 5, 2)
    ra, rb = run([ApplyMasks(a), ApplyMasks(b)], arr, client=client)
    np.testing.assert_allclose(ra["intensity"][..., 0], (ref * a.rasterize((12, 10))).sum((2, 3)))
    np.testing.assert_allclose(rb["intensity"][..., 0], (ref * b.rasterize((12, 10))).sum((2, 3)))


def test_summary_frames_in_one_pass_then_from_memory(counted):
    arr, reader, ref = counted
    mean, mx, std = arr.fs.summary("mean", "max", "std", client="inline")
    once = reader.bytes_read
    assert once == ref.nbytes
    flat = ref.reshape(-1, 12, 10).astype("f8")
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_array_equal(mx, ref.max((0, 1)))
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-10)
    # the README's three calls read nothing more
    np.testing.assert_array_equal(arr.fs.mean_frame(client="inline"), mean)
    np.testing.assert_array_equal(arr.fs.max_frame(client="inline"), mx)
    np.testing.assert_array_equal(arr.fs.std_frame(client="inline"), std)
    assert reader.bytes_read == once
    assert arr.fs.max_frame().dtype == ref.dtype
    with pytest.raises(ValueError, match="median"):
        arr.fs.summary("median")


def test_bad_udfs_are_a_clear_error(counted):
    arr = counted[0]
    with pytest.raises(TypeError, match="expected a UDF"):
        run([SumFrame(), "max"], arr, client="inline")
    with pytest.raises(TypeError, match="expected a UDF"):
        run([], arr, client="inline")
