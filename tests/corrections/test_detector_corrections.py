"""What a detector states itself (DECTRIS pixel_mask, flatfield): applied unless refused,
from master files and from a stream's series header."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import framescope as fs
from framescope.corrections import from_detector
from framescope.io._hdf5_write import write_dectris
from framescope.udf import SumFrame

SCAN, DET = (4, 5), (12, 14)


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(3).poisson(50, (*SCAN, *DET)).astype(np.uint16)


def _mask():
    mask = np.zeros(DET, np.uint32)
    mask[0, :] = 1  # gap
    mask[5, 6] = 2  # dead
    mask[9, 2] = 1 << 4  # noisy
    return mask


def _master(tmp_path, frames, *, flatfield=None, applied=None):
    master = write_dectris(tmp_path / "d_master.h5", [frames.reshape(-1, *DET)],
                           n_frames=frames.shape[0] * frames.shape[1], frame_shape=DET,
                           dtype="uint16", scan=SCAN, compression=None)
    with h5py.File(master, "r+") as f:
        spec = f["/entry/instrument/detector/detectorSpecific"]
        spec["pixel_mask"][...] = _mask()
        if flatfield is not None:
            spec.create_dataset("flatfield", data=flatfield)
        if applied is not None:
            spec.create_dataset("flatfield_correction_applied", data=int(applied))
    return master


def test_the_pixel_mask_of_a_master_file_zeroes_bad_pixels(tmp_path, frames):
    master = _master(tmp_path, frames)
    arr = fs.open(master)
    c = arr.fs.corrections
    assert c is not None
    np.testing.assert_array_equal(c.bad, _mask() != 0)
    assert c.gain is None  # no flat field in the file
    total = fs.run(SumFrame(), arr, client="inline")["sum"].values
    want = frames.sum(axis=(0, 1), dtype=np.float64)
    want[_mask() != 0] = 0
    np.testing.assert_allclose(total, want)
    raw = fs.run(SumFrame(), fs.open(master, corrections=False), client="inline")
    np.testing.assert_allclose(raw["sum"].values, frames.sum(axis=(0, 1), dtype=np.float64))


@pytest.mark.parametrize("applied", [True, False, None])
def test_a_flatfield_is_applied_only_when_the_detector_did_not(tmp_path, frames, applied):
    flat = np.random.default_rng(1).uniform(0.9, 1.1, DET).astype(np.float32)
    master = _master(tmp_path, frames, flatfield=flat, applied=applied)
    c = fs.open(master).fs.corrections
    if applied is False:
        np.testing.assert_array_equal(c.gain, flat)
    else:
        assert c.gain is None


def test_unusable_flatfield_pixels_become_bad():
    flat = np.ones(DET, np.float32)
    flat[3, 3] = 0
    flat[4, 4] = np.nan
    c = from_detector({"flatfield": flat}, {"flatfield_correction_applied": 0})
    assert np.argwhere(c.bad).tolist() == [[3, 3], [4, 4]]
    assert np.isfinite(c.gain).all()
    assert from_detector({"pixel_mask": np.zeros(DET, np.uint32)}) is None
