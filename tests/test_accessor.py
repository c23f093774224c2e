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


def test_persist_then_analyse(arr, client, tmp_path):
    from distributed import wait

    from framescope.io._lazy import source_of

    _, ref = arr
    np.save(tmp_path / "d.npy", ref)
    a = framescope.open(tmp_path / "d.npy", chunks=2)
    assert source_of(a) is not None
    kept = a.fs.persist(client=client)
    assert source_of(kept) is None  # the engine uses the held blocks, not the file
    with client.as_current():
        wait(kept.data)
    (tmp_path / "d.npy").unlink()  # proves it: the file is gone
    np.testing.assert_array_equal(kept.fs.sum_frame(client=client), ref.sum((0, 1)))


def test_a_non_default_client_runs_jobs(arr, client):
    """A Client made with set_as_default=False (as framescope makes its own) works."""
    from distributed import Client

    a, ref = arr
    with Client(client.scheduler.address, set_as_default=False) as other:
        np.testing.assert_array_equal(a.fs.sum_frame(client=other), ref.sum((0, 1)))


def test_accessor_checks_dims():
    with pytest.raises(DimensionError, match=r"found \('a', 'b'\)"):
        xr.DataArray(np.zeros((2, 2)), dims=("a", "b")).fs  # noqa: B018


def test_radial_profile_defaults_and_attrs(arr, client):
    a, ref = arr
    h, w = ref.shape[2:]
    yy, xx = np.indices((h, w))
    b = np.floor(np.hypot(yy - h // 2, xx - w // 2)).astype(int)  # default centre (4, 4)
    counts = np.bincount(b.ravel())
    sums = np.stack([np.bincount(b.ravel(), weights=f.ravel()) for f in
                     ref.reshape(-1, h, w).astype("f8")]).reshape(6, 5, -1)
    for c in ("inline", client):
        prof = a.fs.radial_profile(client=c)
        assert prof.dims == ("scan_y", "scan_x", "radius")
        assert prof.name == "radial_profile"
        np.testing.assert_array_equal(prof.radius, np.arange(len(counts)) + 0.5)
        assert prof.radius.attrs["units"] == "px"
        np.testing.assert_array_equal(prof.counts, counts)
        np.testing.assert_allclose(prof, sums / counts, rtol=1e-6)
    assert {k: prof.attrs[k] for k in ("cy", "cx", "r_min", "bin_width", "n_bins",
                                       "normalize", "masked_pixels")} == {
        "cy": 4.0, "cx": 4.0, "r_min": 0.0, "bin_width": 1.0, "n_bins": len(counts),
        "normalize": "mean", "masked_pixels": 0}
    assert prof.attrs["r_max"] == len(counts)
    assert prof.attrs["framescope_version"] == framescope.__version__
    roi = np.zeros((6, 5), bool)
    roi[2, 1:4] = True
    part = a.fs.radial_profile(2.5, 3, r_max=3, normalize="sum", roi=roi, client="inline")
    assert part.sizes["radius"] == 3
    assert np.isnan(part.values[~roi]).all()
    assert np.isfinite(part.values[roi]).all()


def test_max_std_var_frames_match_numpy(arr, client):
    a, ref = arr
    flat = ref.reshape(-1, 8, 8)
    for c in ("inline", client):
        mx = a.fs.max_frame(client=c)
        assert mx.name == "max_frame"
        assert mx.dtype == np.uint16
        np.testing.assert_array_equal(mx, flat.max(0))
    np.testing.assert_allclose(a.fs.std_frame(client="inline"), flat.astype("f8").std(0))
    np.testing.assert_allclose(a.fs.var_frame(client="inline"), flat.astype("f8").var(0))
    roi = np.zeros((6, 5), bool)
    roi[1:3, 2:4] = True
    np.testing.assert_array_equal(a.fs.max_frame(roi=roi, client="inline"), ref[roi].max(0))
