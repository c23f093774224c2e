from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import framescope
from framescope.errors import DimensionError


@pytest.fixture
def arr():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 50, (6, 5, 8, 8)).astype("uint16")
    return framescope.from_array(ref, chunks=(2, 5, 8, 8)), ref


def test_frame_methods_match_numpy(arr):
    a, ref = arr
    flat = ref.reshape(-1, 8, 8).astype("f8")
    np.testing.assert_array_equal(a.fs.sum_frame(client="inline"), flat.sum(0))
    np.testing.assert_allclose(a.fs.mean_frame(client="inline"), flat.mean(0))
    stats = a.fs.frame_stats(client="inline")
    np.testing.assert_allclose(stats["std"], flat.std(0))
    np.testing.assert_array_equal(a.fs.pick(4, 3), ref[4, 3])
    roi = np.zeros((6, 5), bool)
    roi[1:3, 2:4] = True
    np.testing.assert_array_equal(a.fs.sum_frame(roi=roi, client="inline"), ref[roi].sum(0))


def test_persist_then_analyse(arr, client):
    a, ref = arr
    kept = a.fs.persist(client=client)
    np.testing.assert_array_equal(kept.fs.sum_frame(client=client), ref.sum((0, 1)))


def test_accessor_checks_dims():
    with pytest.raises(DimensionError, match=r"found \('a', 'b'\)"):
        xr.DataArray(np.zeros((2, 2)), dims=("a", "b")).fs  # noqa: B018
