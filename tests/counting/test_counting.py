"""Electron counting: against the simulation's true electrons, a plain-numpy reference of
the event rule, stempy (when installed) and the stempy sparse HDF5 layout."""

from __future__ import annotations

import math

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from _truth import match
from dask.callbacks import Callback

from framescope.calibration import Calibration
from framescope.counting import (
    CountedData,
    CountingError,
    Thresholds,
    count_electrons,
    estimate_thresholds,
    load_counted,
    save_counted,
)
from framescope.datasets import lowdose
from framescope.errors import DimensionError, FormatError

# the read noise the simulation draws, plus 1/12 ADU^2 of rounding to integers
SIGMA = math.sqrt(4.0**2 + 1 / 12)


# ---- independent references ---------------------------------------------------------------
def reference_events(frames: np.ndarray, dark: np.ndarray, bg: float, xr_: float):
    """The documented event rule with whole-array numpy comparisons (no loops over pixels):
    background < v < xray, v > the 4 neighbours before it in raster order and >= the 4
    after it; outside the frame counts as -inf."""
    v = frames.reshape(-1, *frames.shape[-2:]).astype(np.float32) - dark.astype(np.float32)
    n, h, w = v.shape
    pad = np.full((n, h + 2, w + 2), -np.inf, dtype=np.float32)
    pad[:, 1:-1, 1:-1] = v
    ok = (v > np.float32(bg)) & (v < np.float32(xr_))
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
        ok &= v > pad[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        ok &= v >= pad[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    f, y, x = np.nonzero(ok)  # row-major: frame after frame, raster order inside
    counts = np.bincount(f, minlength=n)
    cents = []
    for fi, yi, xi in zip(f, y, x, strict=True):
        win = np.maximum(v[fi, max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2], 0).astype(float)
        yy, xx = np.mgrid[max(yi - 1, 0):min(yi + 2, h), max(xi - 1, 0):min(xi + 2, w)]
        cents.append(((win * yy).sum() / win.sum(), (win * xx).sum() / win.sum()))
    return counts, (y * w + x).astype(np.uint32), np.array(cents).reshape(-1, 2)


def score(ds, counted: CountedData, isolation: float = 3.0):
    """Recall, precision and the recall of electrons with no other electron within
    ``isolation`` px (those a local-maximum counter can resolve)."""
    w = ds.frame_shape[1]
    hits, isolated = [], []
    for i in range(counted.n_frames):
        truth = ds.positions[ds.offsets[i]:ds.offsets[i + 1]]
        ev = counted.events(i).astype(np.int64)
        hits.append(match(truth, np.stack([ev // w, ev % w], axis=1).astype(float)))
        d = np.hypot(*(truth[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        isolated.append(d.min(axis=1, initial=np.inf) > isolation)
    hit, iso = np.concatenate(hits), np.concatenate(isolated)
    return hit.mean(), hit.sum() / counted.n_events, hit[iso].mean(), iso.sum()


@pytest.fixture(scope="module")
def dose01():
    ds = lowdose(scan=(6, 6), det=(64, 64), dose=0.1, seed=5)
    return ds, ds.dark_frames(64).mean(axis=0)


# ---- ground truth ---------------------------------------------------------------------------
def test_dose_0p1_precision_and_resolvable_recall(dose01):
    """At 0.1 e-/px every event is a true electron and every resolvable electron is found.
    Overall recall is far lower and must be: two electrons in neighbouring pixels make one
    local maximum, and at 0.1 e-/px over half the electrons have a neighbour (1 - e^-0.8)."""
    ds, dark = dose01
    recall, precision, resolvable, n_iso = score(ds, count_electrons(ds.frames, dark=dark))
    assert precision >= 0.98
    assert n_iso > 500
    assert resolvable >= 0.98
    assert recall < 1 - (1 - math.exp(-0.8)) / 4  # the coincidence loss shows


def test_low_dose_recall_and_precision():
    """Where coincidences are rare (0.002 e-/px) the overall recall reaches 0.98 too. The
    X-ray threshold is given: the recipe's 10 std of all values falls into the electron
    signal at this dose (docs/counting.md)."""
    ds = lowdose(scan=(16, 16), det=(64, 64), dose=0.002, seed=6)
    counted = count_electrons(ds.frames, dark=ds.dark_frames(64).mean(axis=0),
                              xray_threshold=1000.0)
    recall, precision, _, _ = score(ds, counted)
    assert recall >= 0.98
    assert precision >= 0.98


def test_centroids_closer_than_pixels(dose01):
    """For electrons with no other within 3 px, the sub-pixel centroid lies nearer the true
    position than the event pixel's centre, whose error is uniform (rms 1/sqrt(12) per
    axis)."""
    ds, dark = dose01
    counted = count_electrons(ds.frames, dark=dark, centroids=True)
    w = ds.frame_shape[1]
    err_pix, err_cent = [], []
    for i in range(counted.n_frames):
        truth = ds.positions[ds.offsets[i]:ds.offsets[i + 1]]
        d = np.hypot(*(truth[:, None, :] - truth[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        truth = truth[d.min(axis=1) > 3]
        ev = counted.events(i).astype(np.int64)
        pix = np.stack([ev // w, ev % w], axis=1).astype(float)
        cent = counted.centroids[counted.offsets[i]:counted.offsets[i + 1]]
        d = np.hypot(*(truth[:, None, :] - pix[None, :, :]).transpose(2, 0, 1))
        nearest = d.argmin(axis=1)
        found = d[np.arange(len(truth)), nearest] < 1
        err_pix.append(pix[nearest[found]] - truth[found])
        err_cent.append(cent[nearest[found]] - truth[found])
    rms_pix = np.sqrt(np.mean(np.concatenate(err_pix) ** 2, axis=0))
    rms_cent = np.sqrt(np.mean(np.concatenate(err_cent) ** 2, axis=0))
    assert len(np.concatenate(err_pix)) > 500
    np.testing.assert_allclose(rms_pix, 1 / math.sqrt(12), rtol=0.1)
    assert np.all(rms_cent < 0.65 * rms_pix)


# ---- thresholds -------------------------------------------------------------------------------
def test_noise_sigma_from_dark_frames():
    """On dark frames: the fitted noise is the read noise (with the dark reference) or the
    read noise and the pixel-to-pixel dark scatter of the drawn map (without)."""
    ds = lowdose(scan=(1, 1), det=(128, 128), seed=7)
    darks = ds.dark_frames(40)
    t = estimate_thresholds(darks, dark=ds.dark_level)
    assert t.noise_sigma == pytest.approx(SIGMA, rel=0.02)
    assert t.noise_mean == pytest.approx(0.0, abs=0.1)
    assert t.background == pytest.approx(t.noise_mean + 4 * t.noise_sigma)
    values = darks.astype(np.float64) - ds.dark_level
    assert t.xray == pytest.approx(values.mean() + 10 * values.std(ddof=1), rel=1e-9)
    raw = estimate_thresholds(darks)
    expected = math.sqrt(SIGMA**2 + ds.dark_level.astype(np.float64).var())
    assert raw.noise_sigma == pytest.approx(expected, rel=0.03)
    assert raw.noise_mean == pytest.approx(ds.dark_level.mean(), abs=0.3)


@pytest.mark.parametrize(("dose", "rel"), [(0.005, 0.03), (0.1, 0.1)])
def test_noise_sigma_from_data_frames(dose, rel):
    """From frames with electrons the noise fit keeps to the signal-free side of the peak:
    within 3% at 0.005 e-/px; at 0.1 e-/px the tails of charge clouds reach most pixels and
    widen the peak itself (by about 8%; stempy's whole-histogram fit: about 50%)."""
    ds = lowdose(scan=(4, 10), det=(64, 64), dose=dose, seed=8)
    t = estimate_thresholds(ds.frames, dark=ds.dark_level)
    assert t.noise_sigma == pytest.approx(SIGMA, rel=rel)
    assert t.n_frames == 40


def test_given_thresholds_skip_the_sample():
    ds = lowdose(scan=(2, 2), det=(32, 32), seed=9)
    counted = count_electrons(ds.frames, background_threshold=116.0, xray_threshold=900.0)
    assert counted.thresholds == Thresholds(background=116.0, xray=900.0)
    half = count_electrons(ds.frames, dark=ds.dark_level, xray_threshold=900.0, n_samples=3)
    assert half.thresholds.xray == 900.0
    assert half.thresholds.n_frames == 3
    assert half.thresholds.noise_sigma == pytest.approx(SIGMA, rel=0.3)  # 3 small frames
    assert Thresholds.from_json(half.thresholds.to_json()) == half.thresholds


# ---- the kernel against the numpy reference ----------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_kernel_matches_numpy_reference(dtype):
    ds = lowdose(scan=(3, 5), det=(24, 40), dose=0.08, xray_rate=2.0, seed=10, dtype=dtype)
    dark = ds.dark_frames(16).mean(axis=0)
    counted = count_electrons(ds.frames, dark=dark, centroids=True)
    t = counted.thresholds
    counts, indices, cents = reference_events(ds.frames, dark, t.background, t.xray)
    assert counted.n_events > 500
    np.testing.assert_array_equal(np.diff(counted.offsets), counts)
    np.testing.assert_array_equal(counted.indices, indices)
    np.testing.assert_allclose(counted.centroids, cents, atol=1e-4)


def test_tie_breaking_and_edges():
    """Hand-made frames: equal neighbours give one event, the first in raster order; edge
    and corner pixels count; the thresholds are strict."""
    f = np.zeros((5, 6, 7), dtype=np.float32)
    f[0, 2, 3] = f[0, 2, 4] = 50  # horizontal tie -> (2, 3)
    f[1, 1, 1] = f[1, 2, 2] = 50  # diagonal tie -> (1, 1)
    f[2, 1:3, 4:6] = 50  # 2x2 plateau -> (1, 4)
    f[3, 0, 0] = f[3, 5, 6] = f[3, 0, 6] = 30  # corners
    f[4, 1, 1], f[4, 3, 3], f[4, 1, 5] = 10, 200, 199  # at bg, at xray, just inside
    counted = count_electrons(f, background_threshold=10.0, xray_threshold=200.0)
    events = [sorted(int(i) for i in counted.events(k)) for k in range(5)]
    assert events == [[2 * 7 + 3], [1 * 7 + 1], [1 * 7 + 4], [0, 6, 5 * 7 + 6], [1 * 7 + 5]]
    assert counted.scan_shape == (1, 5)


def test_xray_events_excluded():
    """No event within 1.5 px of a simulated X-ray: the X-ray pixel is above the threshold
    and its bright neighbours are no local maxima."""
    ds = lowdose(scan=(4, 4), det=(48, 48), dose=0.02, xray_rate=3.0, seed=11)
    dark = ds.dark_frames(32).mean(axis=0)
    counted = count_electrons(ds.frames, dark=dark)
    frames = ds.frames.reshape(-1, *ds.frame_shape) - dark
    w = ds.frame_shape[1]
    n_xray = 0
    for i in range(counted.n_frames):
        xrays = ds.xray_positions[ds.xray_offsets[i]:ds.xray_offsets[i + 1]]
        ev = counted.events(i).astype(np.int64)
        pos = np.stack([ev // w, ev % w], axis=1)
        for y, x in np.floor(xrays + 0.5).astype(int):
            n_xray += 1
            peak = frames[i, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].max()
            assert peak > counted.thresholds.xray  # an X-ray the threshold can exclude
            assert np.all(np.hypot(pos[:, 0] - y, pos[:, 1] - x) > 1.5)
    assert n_xray > 20


# ---- the container ---------------------------------------------------------------------------
def test_dense_views_and_sizes(dose01):
    ds, dark = dose01
    counted = count_electrons(ds.frames, dark=dark)
    dense = counted.to_dense()
    assert dense.shape == ds.frames.shape
    np.testing.assert_array_equal(dense.sum(axis=(2, 3)), counted.events_per_frame)
    assert dense.sum() == counted.n_events
    flat = dense.reshape(counted.n_frames, -1)
    for i in (0, 7, counted.n_frames - 1):
        np.testing.assert_array_equal(np.flatnonzero(flat[i]), counted.events(i))
    np.testing.assert_array_equal(counted.frame((1, 2)), dense[1, 2])
    lazy = counted.to_dataarray(rows=4)
    assert lazy.dims == ("scan_y", "scan_x", "det_y", "det_x")
    assert lazy.chunks[0] == (4, 2)
    np.testing.assert_array_equal(lazy.values, dense)
    assert counted.nbytes == 8 * (counted.n_frames + 1) + 4 * counted.n_events
    assert counted.nbytes < ds.frames.nbytes / 5
    with pytest.raises(MemoryError, match="max_bytes"):
        counted.to_dense(max_bytes=1000)
    with pytest.raises(IndexError, match="outside the scan"):
        counted.events((6, 0))


# ---- lazy input ------------------------------------------------------------------------------
class _Largest(Callback):
    """The largest array any dask task produced."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.largest = max(self.largest, getattr(result, "nbytes", 0))


def test_dataarray_counted_chunk_by_chunk(dose01):
    ds, dark = dose01
    cal = Calibration(energy=300e3, angle_per_px=0.5e-3)
    # built chunk by chunk (da.from_array would hold the whole array as one task result)
    data = da.map_blocks(
        lambda block_info=None: ds.frames[tuple(slice(*loc) for loc in
                                                block_info[None]["array-location"])],
        chunks=((2, 2, 2), (4, 2), (32, 32), (64,)), dtype=ds.frames.dtype,
        meta=np.empty((0,) * 4, ds.frames.dtype))
    arr = xr.DataArray(data, dims=("scan_y", "scan_x", "det_y", "det_x"),
                       attrs={"calibration": cal.to_json()})
    arr = arr.transpose("scan_x", "scan_y", "det_y", "det_x")  # any dim order
    with _Largest() as cb, dask.config.set(scheduler="threads"):
        lazy = count_electrons(arr, dark=dark, centroids=True, n_samples=8)
    eager = count_electrons(ds.frames, dark=dark, centroids=True, n_samples=8)
    assert lazy.scan_shape == (6, 6)
    np.testing.assert_array_equal(lazy.offsets, eager.offsets)
    np.testing.assert_array_equal(lazy.indices, eager.indices)
    np.testing.assert_array_equal(lazy.centroids, eager.centroids)
    assert lazy.thresholds == eager.thresholds  # the same sampled frames
    assert 0 < cb.largest <= ds.frames.nbytes // 3  # a chunk of rows, never the whole
    assert lazy.calibration == cal
    assert lazy.to_dataarray().attrs["calibration"] == cal.to_json()


def test_file_read_straight_from_its_reader(tmp_path, dose01, monkeypatch):
    """A file opened with framescope.open is read through its reader in blocks (here of 5
    frames, so the two buffers take turns and the last block is short), never through dask;
    the events are those of the same frames in memory."""
    import framescope as fs
    from framescope.counting import _count

    ds, dark = dose01
    path = fs.io.save(ds.to_dataarray(chunks=2), tmp_path / "frames.raw", "raw",
                      progress=False)
    arr = fs.open(path)
    monkeypatch.setattr(_count, "_BLOCK_BYTES", 5 * ds.frames[0, 0].nbytes)
    with _Largest() as cb:
        counted = count_electrons(arr, dark=dark, centroids=True)
    assert cb.largest == 0  # no dask task ran
    eager = count_electrons(ds.frames, dark=dark, centroids=True)
    np.testing.assert_array_equal(counted.offsets, eager.offsets)
    np.testing.assert_array_equal(counted.indices, eager.indices)
    np.testing.assert_array_equal(counted.centroids, eager.centroids)
    assert counted.thresholds == eager.thresholds


# ---- bad input -----------------------------------------------------------------------------
def test_bad_input_errors():
    frames = np.zeros((2, 3, 16, 20), dtype=np.uint16)
    with pytest.raises(CountingError, match=r"dark must have .*\(16, 20\), found \(20, 16\)"):
        count_electrons(frames, dark=np.zeros((20, 16)))
    with pytest.raises(CountingError, match=r"thresholds inverted.*50.*below.*20"):
        count_electrons(frames, background_threshold=50, xray_threshold=20)
    with pytest.raises(CountingError, match=r"frames must be 3D .* found shape \(16, 20\)"):
        count_electrons(frames[0, 0])
    with pytest.raises(CountingError, match="complex"):
        count_electrons(frames.astype(np.complex64))
    dark = np.zeros((16, 20))
    dark[3, 4] = np.nan
    with pytest.raises(CountingError, match="1 non-finite"):
        count_electrons(frames, dark=dark)
    with pytest.raises(DimensionError, match="dims"):
        count_electrons(xr.DataArray(frames, dims=("a", "b", "det_y", "det_x")))
    with pytest.raises(CountingError, match="k_xray must be a positive"):
        count_electrons(frames, k_xray=-1)


# ---- the sparse HDF5 layout -------------------------------------------------------------------
def test_hdf5_round_trip(tmp_path, dose01):
    ds, dark = dose01
    cal = Calibration(energy=200e3)
    counted = count_electrons(ds.to_dataarray().assign_attrs(calibration=cal.to_json()),
                              dark=dark, centroids=True)
    path = save_counted(counted, tmp_path / "counted.h5")
    back = load_counted(path)
    assert (back.scan_shape, back.frame_shape) == (counted.scan_shape, counted.frame_shape)
    np.testing.assert_array_equal(back.offsets, counted.offsets)
    np.testing.assert_array_equal(back.indices, counted.indices)
    np.testing.assert_array_equal(back.centroids, counted.centroids)
    assert back.thresholds == counted.thresholds
    assert back.calibration == cal
    with pytest.raises(FileExistsError, match=r"counted\.h5"):
        save_counted(counted, path)
    save_counted(counted, path, overwrite=True)


def test_hdf5_layout_with_h5py(tmp_path):
    """The attributes and datasets of the documented layout, read with plain h5py, on a
    non-square scan and frame (so swapped axes show)."""
    import h5py

    frames = np.zeros((2, 3, 4, 5), dtype=np.uint16)
    frames[0, 1, 2, 3] = frames[1, 2, 0, 4] = frames[1, 2, 3, 0] = 100
    counted = count_electrons(frames, background_threshold=10, xray_threshold=1000)
    path = save_counted(counted, tmp_path / "c.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["version"] == 3
        ev = f["electron_events/frames"]
        pos = f["electron_events/scan_positions"]
        assert (ev.attrs["Nx"], ev.attrs["Ny"]) == (4, 5)
        assert (pos.attrs["Nx"], pos.attrs["Ny"]) == (3, 2)
        np.testing.assert_array_equal(pos[()], np.arange(6))
        got = [list(e) for e in ev[()]]
    assert got == [[], [2 * 5 + 3], [], [], [], [4, 3 * 5]]


def test_hdf5_bad_file(tmp_path):
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(FormatError, match=r"other\.h5.*not counted electrons"):
        load_counted(path)
    with h5py.File(path, "a") as f:
        f.create_dataset("electron_events/frames", (2,), dtype=h5py.vlen_dtype(np.uint32))
        f["electron_events/scan_positions"] = np.arange(2)
    with pytest.raises(FormatError, match="lacks the attribute 'Nx'"):
        load_counted(path)


def test_the_accessor_counts_like_the_function():
    import framescope as fs
    from framescope.counting import count_electrons

    sim = fs.datasets.lowdose(scan=(3, 4), det=(32, 32), dose=0.01, seed=9)
    arr = sim.to_dataarray()
    a = arr.fs.count_electrons(background_threshold=20.0, xray_threshold=2000.0)
    b = count_electrons(arr.values, background_threshold=20.0, xray_threshold=2000.0)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_a_counted_file_opens_as_frames_every_analysis_runs_on(tmp_path):
    import framescope as fs
    import framescope.masks as fm
    from framescope.counting import count_electrons, save_counted

    sim = lowdose(scan=(4, 5), det=(32, 32), dose=0.01, seed=4)
    counted = count_electrons(sim.frames, dark=sim.dark_frames(32).mean(axis=0),
                              xray_threshold=5 * sim.gain)
    path = tmp_path / "counted.h5"
    save_counted(counted, path)
    arr = fs.open(path)
    assert arr.attrs["format"] == "counted"
    assert arr.shape == (4, 5, 32, 32)
    dense = counted.to_dense()
    np.testing.assert_array_equal(arr.values, dense)  # the lazy frames are the counts
    ring = fm.ring(16, 16, 3, 12)
    img = arr.fs.virtual_image(ring, client="inline")
    np.testing.assert_array_equal(img, (dense * ring.rasterize((32, 32))).sum((2, 3)))
