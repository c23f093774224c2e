"""Counted files run through the engine as tiles of events (sparse kernels), against numpy
on the densified counts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import framescope as fs
from framescope.counting import count_electrons, save_counted
from framescope.datasets import lowdose
from framescope.engine import _tasks
from framescope.io._counted import CountedReader
from framescope.masks import MaskStack
from framescope.udf import UDF, ApplyMasks, Buffer, CenterOfMass, Events, SumFrame

SCAN, DET = (6, 7), (24, 28)  # nothing square: y and x cannot swap unnoticed


@pytest.fixture(scope="module")
def counted_file(tmp_path_factory):
    ds = lowdose(scan=SCAN, det=DET, dose=0.1, seed=4)
    counted = count_electrons(ds.frames, dark=ds.dark_frames(32).mean(axis=0))
    path = save_counted(counted, tmp_path_factory.mktemp("counted") / "counted.h5")
    return path, counted.to_dense().astype(np.float64)


@pytest.fixture
def spy(monkeypatch):
    """Counts tiles of events and densified tiles; ``spy["forbid"]`` makes densifying fail."""
    calls = {"events": 0, "densify": 0, "read": 0, "forbid": False}
    events_of, densify, read = _tasks.events_of, Events.densify, CountedReader._read

    def counting_events(*args):
        calls["events"] += 1
        return events_of(*args)

    def counting_densify(self, out):
        calls["densify"] += 1
        assert not calls["forbid"], "a tile of events was densified"
        return densify(self, out)

    def counting_read(self, *args):
        calls["read"] += 1
        assert not calls["forbid"], "the reader densified frames"
        return read(self, *args)

    monkeypatch.setattr(_tasks, "events_of", counting_events)
    monkeypatch.setattr(Events, "densify", counting_densify)
    monkeypatch.setattr(CountedReader, "_read", counting_read)
    return calls


def small_tiles(monkeypatch, frames: int) -> None:
    """Tiles of ``frames`` frames, so that tiles split scan rows, ROI runs and offsets."""
    monkeypatch.setattr(_tasks, "tile_frames", lambda meta, tile_bytes=0: frames)
    monkeypatch.setattr(_tasks, "event_tile_frames", lambda meta, epf, tile_bytes=0: frames)


def in_memory(arr):
    """The frames of ``arr`` in memory: the dense kernels' path."""
    out = arr.copy(data=arr.values)
    out.encoding = {}  # computed arrays keep the file source in encoding
    return out


def ring_masks() -> MaskStack:
    return MaskStack.from_any({"ring": fs.masks.ring(cy=11.5, cx=13, r_in=3, r_out=10),
                               "disk": fs.masks.disk(cy=12, cx=14, r=5),
                               "box": fs.masks.box(y0=2, y1=9, x0=20, x1=27)})


def images(masks: MaskStack, dense: np.ndarray) -> np.ndarray:
    m = masks.dense(DET).reshape(*DET, -1).astype(np.float64)
    return np.einsum("abij,ijk->abk", dense, m)


def com_reference(dense: np.ndarray, cy: float, cx: float, radius: float | None):
    yy, xx = np.mgrid[: DET[0], : DET[1]].astype(np.float64)
    inside = np.ones(DET, bool) if radius is None else (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    i = dense * inside
    total = i.sum(axis=(2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((i * (yy - cy)).sum(axis=(2, 3)) / total,
                (i * (xx - cx)).sum(axis=(2, 3)) / total)


def test_virtual_images_use_events_and_match_numpy(counted_file, spy):
    path, dense = counted_file
    arr = fs.open(path)
    masks = ring_masks()
    spy["forbid"] = True
    got = arr.fs.virtual_image(masks, cache=False, client="inline")
    assert spy["events"] > 0
    want = images(masks, dense).astype(np.float32)
    np.testing.assert_array_equal(got.transpose("scan_y", "scan_x", "mask").values, want)


def test_weighted_masks_match_numpy(counted_file, spy):
    path, dense = counted_file
    weights = np.random.default_rng(1).random((2, *DET)).astype(np.float32)
    masks = MaskStack.from_any({"a": weights[0], "b": weights[1]})
    spy["forbid"] = True
    got = fs.open(path).fs.virtual_image(masks, cache=False, client="inline")
    want = images(masks, dense)
    np.testing.assert_allclose(got.transpose("scan_y", "scan_x", "mask").values, want,
                               rtol=1e-6)
    one = fs.open(path).fs.virtual_image(MaskStack.from_any(weights[0]), cache=False,
                                         client="inline")
    np.testing.assert_allclose(one.squeeze().values, want[..., 0], rtol=1e-6)


@pytest.mark.parametrize(("cy", "cx", "radius"), [(None, None, None), (11.5, 13.0, 8.0)])
def test_com_uses_events_and_matches_numpy(counted_file, spy, cy, cx, radius):
    path, dense = counted_file
    arr = fs.open(path)
    spy["forbid"] = True
    got = arr.fs.com(cy=cy, cx=cx, radius=radius, client="inline")
    assert spy["events"] > 0
    com_y, com_x = com_reference(dense, DET[0] // 2 if cy is None else cy,
                                 DET[1] // 2 if cx is None else cx, radius)
    np.testing.assert_allclose(got["com_y"].values, com_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["com_x"].values, com_x, rtol=1e-6, atol=1e-6)
    # the same UDF on the densified frames (dense kernels) gives the same numbers
    spy["forbid"] = False
    frames = in_memory(fs.open(path))
    on_frames = frames.fs.com(cy=cy, cx=cx, radius=radius, client="inline")
    for key in ("com_y", "com_x", "divergence", "curl"):
        np.testing.assert_array_equal(got[key].values, on_frames[key].values)


def test_com_with_rotation_and_calibration(counted_file):
    path, _ = counted_file
    arr = fs.open(path).fs.calibrate(angle_per_px=0.5e-3, energy=300e3)
    got = arr.fs.com(rotation=30.0, flip_y=True, radius=9, client="inline")
    frames = in_memory(arr)
    want = frames.fs.com(rotation=30.0, flip_y=True, radius=9, client="inline")
    assert "phase_gradient_x" in got
    for key in want.data_vars:
        np.testing.assert_array_equal(got[key].values, want[key].values)


def test_sum_frame_is_a_bincount(counted_file, spy):
    path, dense = counted_file
    spy["forbid"] = True
    got = fs.open(path).fs.sum_frame(client="inline")
    np.testing.assert_array_equal(got.values, dense.sum(axis=(0, 1)))
    np.testing.assert_allclose(fs.open(path).fs.mean_frame(client="inline").values,
                               dense.mean(axis=(0, 1)), rtol=1e-12)


def test_one_job_of_ring_com_and_sum_never_densifies(counted_file, spy, monkeypatch):
    path, dense = counted_file
    small_tiles(monkeypatch, 5)
    spy["forbid"] = True
    masks = ring_masks()
    res = fs.run({"vi": ApplyMasks(masks), "com": CenterOfMass(radius=8),
                  "sum": SumFrame()}, fs.open(path), client="sync")
    n = SCAN[0] * SCAN[1]
    assert spy["events"] == -(-n // 5)  # one partition: ceil(42 / 5) tiles of events
    np.testing.assert_array_equal(res["vi"]["intensity"].transpose(..., "mask").values,
                                  images(masks, dense).astype(np.float32))
    np.testing.assert_array_equal(res["sum"]["sum"].values, dense.sum(axis=(0, 1)))


class MaxAndSum(UDF):
    """A UDF that knows nothing of events."""

    def buffers(self, meta):
        return {"max": Buffer("nav", "float32"), "total": Buffer("sig", "float64")}

    def process_tile(self, tile, results, state):
        results["max"][:] = tile.flat.max(axis=1)
        results["total"] += tile.data.sum(axis=0)


def test_a_udf_without_events_runs_on_densified_tiles(counted_file, spy, monkeypatch):
    path, dense = counted_file
    small_tiles(monkeypatch, 4)
    masks = ring_masks()
    res = fs.run({"plain": MaxAndSum(), "vi": ApplyMasks(masks)}, fs.open(path),
                 client="sync")
    tiles = spy["events"]
    assert tiles == -(-SCAN[0] * SCAN[1] // 4)
    assert spy["densify"] == tiles  # once per tile for both UDFs
    assert spy["read"] == 0
    np.testing.assert_array_equal(res["plain"]["max"].values, dense.max(axis=(2, 3)))
    np.testing.assert_array_equal(res["plain"]["total"].values, dense.sum(axis=(0, 1)))
    np.testing.assert_array_equal(res["vi"]["intensity"].transpose(..., "mask").values,
                                  images(masks, dense).astype(np.float32))
    stats = fs.open(path).fs.frame_stats(client="inline")
    np.testing.assert_allclose(stats["std"].values, dense.std(axis=(0, 1)), rtol=1e-10)


def test_roi_and_sync_offset(counted_file, monkeypatch):
    path, dense = counted_file
    small_tiles(monkeypatch, 3)
    masks = ring_masks()
    roi = np.random.default_rng(2).random(SCAN) < 0.5
    got = fs.open(path).fs.virtual_image(masks, roi=roi, cache=False, client="sync")
    want = images(masks, dense).astype(np.float32)
    vals = got.transpose(..., "mask").values
    np.testing.assert_array_equal(vals[roi], want[roi])
    # frames shifted by the offset; positions past the file's frames are blank
    n = SCAN[0] * SCAN[1]
    flat = images(masks, dense).reshape(n, -1).astype(np.float32)
    for offset, scan in ((-4, (5, 8)), (3, (3, 13))):
        arr = fs.open(path, sync_offset=offset, scan=scan)
        got = arr.fs.virtual_image(masks, cache=False, client="sync")
        want = np.zeros((scan[0] * scan[1], len(masks)), np.float32)
        frames = np.arange(want.shape[0]) + offset
        ok = (frames >= 0) & (frames < n)
        want[ok] = flat[frames[ok]]
        np.testing.assert_array_equal(got.transpose(..., "mask").values.reshape(want.shape),
                                      want)
        # the dense read of the same layout agrees
        np.testing.assert_array_equal(
            arr.values.reshape(-1, *DET)[~ok].sum(), 0)


def test_corrections_run_on_densified_frames(counted_file, spy):
    path, dense = counted_file
    gain = np.random.default_rng(3).uniform(0.5, 1.5, DET).astype(np.float32)
    masks = ring_masks()
    want = images(masks, dense * gain)
    # linear: folded into weighted masks, still on the events
    arr = fs.open(path).fs.with_corrections(gain=gain)
    spy["forbid"] = True
    got = arr.fs.virtual_image(masks, cache=False, client="inline")
    np.testing.assert_allclose(got.transpose(..., "mask").values, want, rtol=1e-5)
    # a threshold is not linear: the frames are densified and corrected
    spy["forbid"] = False
    arr = fs.open(path).fs.with_corrections(threshold=0.5)
    got = arr.fs.virtual_image(masks, cache=False, client="inline")
    assert spy["read"] > 0
    np.testing.assert_array_equal(got.transpose(..., "mask").values,
                                  images(masks, dense).astype(np.float32))


def test_on_a_dask_cluster(counted_file):
    distributed = pytest.importorskip("distributed")
    path, dense = counted_file
    masks = ring_masks()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        arr = fs.open(path, chunks=2)  # three partitions
        got = arr.fs.virtual_image(masks, cache=False, client=client)
        total = arr.fs.sum_frame(client=client)
    np.testing.assert_array_equal(got.transpose(..., "mask").values,
                                  images(masks, dense).astype(np.float32))
    np.testing.assert_array_equal(total.values, dense.sum(axis=(0, 1)))


def test_reader_pickles_without_its_events(counted_file):
    path, dense = counted_file
    reader = CountedReader(path)
    blob = pickle.dumps(reader)
    assert len(blob) < 2000  # the path and the header, not the events
    again = pickle.loads(blob)
    offsets, indices, values = again.read_events(3, 9)
    assert values is None
    assert offsets[0] == 0
    assert len(offsets) == 7
    frames = dense.reshape(-1, DET[0] * DET[1])[3:9]
    for f in range(6):
        np.testing.assert_array_equal(
            np.bincount(indices[offsets[f]:offsets[f + 1]], minlength=frames.shape[1]),
            frames[f])
    np.testing.assert_array_equal(again.read(3, 9), frames.reshape(6, *DET))
    with pytest.raises(IndexError, match=r"counted\.h5: frame range 40:43 outside the 42"):
        again.read_events(40, 43)
