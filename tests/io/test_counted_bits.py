"""Counted files kept as bit planes: when the reader keeps them, what they hold, and that
virtual images through them equal numpy on the densified counts."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import framescope as fs
import framescope.udf._masks as masks_module
from framescope.counting import CountedData, count_electrons, save_counted
from framescope.datasets import lowdose
from framescope.io._counted import BITS_MIN_DENSITY, CountedReader

SCAN, DET = (5, 6), (20, 26)


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    ds = lowdose(scan=SCAN, det=DET, dose=0.1, seed=7)
    counted = count_electrons(ds.frames, dark=ds.dark_frames(16).mean(axis=0))
    assert counted.n_events > BITS_MIN_DENSITY * ds.frames.size  # dense enough for planes
    path = save_counted(counted, tmp_path_factory.mktemp("bits") / "counted.h5")
    return path, counted


def planes_of(counted: CountedData, start: int, stop: int) -> np.ndarray:
    size = DET[0] * DET[1]
    bits = np.zeros((stop - start, (size + 63) // 64 * 64), np.uint8)
    for f in range(start, stop):
        bits[f - start, counted.events(f)] = 1
    return np.packbits(bits, axis=1, bitorder="little").view("<u8")


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    kernel = masks_module.apply_masks_bits

    def spy(*args):
        calls.append(args[0].shape[0])
        return kernel(*args)

    monkeypatch.setattr(masks_module, "apply_masks_bits", spy)
    return calls


def test_reader_keeps_the_frames_as_planes(counted):
    path, data = counted
    reader = CountedReader(path)
    np.testing.assert_array_equal(reader.read_bits(4, 17), planes_of(data, 4, 17))
    assert reader.read_bits(3, 3).shape == (0, (DET[0] * DET[1] + 63) // 64)
    with pytest.raises(IndexError, match=r"counted\.h5: frame range 0:31 outside the 30"):
        reader.read_bits(0, 31)
    reader.read_bits(0, 1)
    blob = pickle.dumps(reader)  # planes, like events, stay in the process that built them
    assert len(blob) < 2000
    np.testing.assert_array_equal(pickle.loads(blob).read_bits(0, 30), planes_of(data, 0, 30))


def test_no_planes_for_sparse_frames_or_repeated_pixels(counted, tmp_path):
    _, data = counted
    size = DET[0] * DET[1]
    # a tenth of the events: below the density that pays for planes
    keep = np.zeros(data.n_events, bool)
    keep[::10] = True
    counts = np.add.reduceat(keep, data.offsets[:-1]) * (np.diff(data.offsets) > 0)
    few = CountedData(data.scan_shape, DET,
                      np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
                      data.indices[keep])
    assert few.n_events < BITS_MIN_DENSITY * size * data.n_frames
    assert CountedReader(save_counted(few, tmp_path / "few.h5")).read_bits(0, 30) is None
    # two electrons on one pixel of one frame (the fit counter, or several frames per
    # position): frames of counts, not planes
    twice = np.insert(data.indices, data.offsets[4], data.indices[data.offsets[4]])
    offsets = data.offsets.copy()
    offsets[5:] += 1
    rep = CountedData(data.scan_shape, DET, offsets, twice)
    reader = CountedReader(save_counted(rep, tmp_path / "twice.h5"))
    assert reader.read_bits(0, 30) is None


def test_virtual_images_through_planes_equal_numpy(counted, kernel_calls, tmp_path):
    path, data = counted
    stack = fs.masks.MaskStack.from_any({
        "ring": fs.masks.ring(cy=9.5, cx=12, r_in=3, r_out=8),
        "disk": fs.masks.disk(cy=10, cx=13, r=4)})
    dense = data.to_dense().astype(np.float64)
    want = np.einsum("abij,ijk->abk", dense,
                     stack.dense(DET).reshape(*DET, -1)).astype(np.float32)
    got = fs.open(path).fs.virtual_image(stack, cache=False, client="inline")
    assert sum(kernel_calls) == data.n_frames  # every frame went through the planes
    np.testing.assert_array_equal(got.transpose("scan_y", "scan_x", "mask").values, want)
    # the same file with a repeated pixel: the event kernel, the same images plus one count
    kernel_calls.clear()
    twice = np.insert(data.indices, data.offsets[4], data.indices[data.offsets[4]])
    offsets = data.offsets.copy()
    offsets[5:] += 1
    rep = save_counted(CountedData(data.scan_shape, DET, offsets, twice), tmp_path / "r.h5")
    got = fs.open(rep).fs.virtual_image(stack, cache=False, client="inline")
    assert not kernel_calls
    y, x = divmod(int(data.indices[data.offsets[4]]), DET[1])
    dense[0, 4, y, x] += 1
    want = np.einsum("abij,ijk->abk", dense,
                     stack.dense(DET).reshape(*DET, -1)).astype(np.float32)
    np.testing.assert_array_equal(got.transpose("scan_y", "scan_x", "mask").values, want)


def test_inline_tasks_of_counted_data_are_joined(counted, monkeypatch):
    """Partitions sized for dense frames hold little work in events: on the inline pool
    they are joined into about two tasks a thread, and the images stay exact."""
    import framescope.engine._run as run_module
    from framescope.engine._executor import inline_pool

    path, data = counted
    arr = fs.open(path, chunks=1)  # a partition per scan row: 5 partitions, 6 frames each
    assert arr.data.npartitions == SCAN[0]
    tasks = []
    submit = run_module.run_source

    def spy(udf, source, positions, meta, state=None):
        tasks.append(positions.size)
        return submit(udf, source, positions, meta, state)

    monkeypatch.setattr(run_module, "run_source", spy)
    monkeypatch.setattr(run_module, "_EVENT_TASK_BYTES", 1)  # little to join: as before
    disk = fs.masks.disk(cy=10, cx=13, r=4)
    got = arr.fs.virtual_image(disk, cache=False, client="inline")
    assert sum(tasks) == data.n_frames
    assert len(tasks) == SCAN[0]
    tasks.clear()
    monkeypatch.setattr(run_module, "_EVENT_TASK_BYTES", 2**40)
    again = arr.fs.virtual_image(disk, cache=False, client="inline")
    assert len(tasks) == min(2 * inline_pool()._max_workers, SCAN[0])
    want = (data.to_dense().astype(np.float64) * disk.rasterize(DET)).sum(axis=(2, 3))
    for res in (got, again):
        np.testing.assert_array_equal(res.values.squeeze(), want.astype(np.float32))
