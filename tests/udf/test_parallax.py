"""The Parallax UDF and its numerics: gathering and binning BF pixels against numpy, the
shift-and-sum on analytic shifted images, registration and the linear fit on known shifts,
the decomposition of the shift matrix, progressive (partly filled) results."""

from __future__ import annotations

import math

import numpy as np
import pytest

import framescope
from framescope.calibration import Calibration
from framescope.datasets import synthetic
from framescope.udf import Meta, Parallax, Tile
from framescope.udf._parallax_fit import (
    align,
    decompose,
    rotation_matrix,
    shift_sum,
    splat_sum,
)


def _blobs(shape: tuple[int, int], shift: np.ndarray) -> np.ndarray:
    """Gaussian blobs evaluated at ``u + shift``: an image whose features appear displaced
    by ``-shift`` (the UDF's convention ``images[j](u) = ref(u + s_j)``)."""
    y, x = np.mgrid[:shape[0], :shape[1]].astype(float)
    y, x = y + shift[0], x + shift[1]
    centres = [(12, 13, 1.0), (18, 20, -0.7), (15, 9, 0.5), (20, 14, 0.8)]
    return 10 + sum(a * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 2.0**2))
                    for cy, cx, a in centres)


def test_shift_sum_undoes_known_shifts():
    rng = np.random.default_rng(3)
    shifts = rng.uniform(-3, 3, (40, 2))
    images = np.stack([_blobs((32, 32), s) for s in shifts])
    total, cover = shift_sum(images, shifts)
    expected = len(shifts) * _blobs((32, 32), np.zeros(2))
    inner = (slice(8, 24), slice(8, 24))
    np.testing.assert_allclose(cover[inner], 1.0)
    np.testing.assert_allclose(total[inner], expected[inner], rtol=2e-3)
    # the unshifted sum is blurred: the test would notice a missing shift
    assert np.abs(images.sum(0)[inner] - expected[inner]).max() > 0.05 * len(shifts)


def test_splat_sum_places_samples_at_their_true_positions():
    # four images, each sampling the fine grid at a different half-px offset: together
    # they sample every fine px once, so the upsampled sum is the fine image itself
    fine = _blobs((64, 64), np.zeros(2))[::1, ::1]
    offsets = np.array([(0, 0), (0, 0.5), (0.5, 0), (0.5, 0.5)])
    # images[j](u) = fine at 2 (u + s_j); its sample u lies at fine px 2 (u + s_j)
    images = np.stack([fine[int(2 * oy)::2, int(2 * ox)::2] for oy, ox in offsets])
    out = splat_sum(images, offsets, 2, sigma=1e-3)
    inner = (slice(4, 60), slice(4, 60))
    np.testing.assert_allclose(out[inner], 4 * fine[inner], rtol=1e-6)


def _band_limited_field(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(n)
    keep = np.hypot(f[:, None], f[None, :]) < 0.15
    return np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * keep).real


def _fourier_sample(field: np.ndarray, shift: np.ndarray, crop: slice) -> np.ndarray:
    """``field(u + shift)`` of a periodic band-limited field, exact, cropped."""
    n = field.shape[0]
    f = np.fft.fftfreq(n)
    ramp = np.exp(2j * np.pi * (f[:, None] * shift[0] + f[None, :] * shift[1]))
    return np.fft.ifft2(np.fft.fft2(field) * ramp).real[crop, crop]


def test_align_recovers_a_known_linear_map():
    field = 5 + _band_limited_field(96)
    m_true = 0.45 * rotation_matrix(0.3) @ np.array([[1.1, 0.1], [0.1, 0.9]])
    yy, xx = np.mgrid[-6:7, -6:7]
    disk = np.hypot(yy, xx) <= 6
    k = np.column_stack([yy[disk], xx[disk]]).astype(float)
    shifts = k @ m_true.T + (0.3, -0.2)
    images = np.stack([_fourier_sample(field, s, slice(32, 64)) for s in shifts])
    measured, m, _, used = align(images, k, np.ones(len(k)))
    assert used.all()
    np.testing.assert_allclose(m, m_true, atol=0.01)
    # shifts are measured against the images' mean: the common offset is not observable
    np.testing.assert_allclose(measured - measured.mean(0), shifts - shifts.mean(0),
                               atol=0.1)


@pytest.mark.parametrize("flip", [False, True])
def test_decompose_splits_rotation_defocus_astigmatism(flip):
    defocus, astig, angle, rot = 2.0, 0.3, 0.4, -0.7
    u = np.array([math.sin(angle), math.cos(angle)])  # (y, x) of the major axis
    v = np.array([u[1], -u[0]])
    s = defocus * np.eye(2) + astig * (np.outer(u, u) - np.outer(v, v))
    m = rotation_matrix(rot, flip) @ s
    dec = decompose(m, flip=flip)
    assert dec.rotation == pytest.approx(rot)
    assert dec.defocus == pytest.approx(defocus)
    assert dec.astigmatism == pytest.approx(astig)
    assert dec.astigmatism_angle == pytest.approx(angle)
    assert dec.asymmetry < 1e-12
    # the other branch: a hint near rot + 180 degrees gives the opposite defocus
    other = decompose(m, flip=flip, rotation_hint=rot + 3.0)
    assert other.defocus == pytest.approx(-defocus)
    assert other.rotation == pytest.approx(rot + math.pi)


def _meta(h: int = 32, w: int = 32, scan: tuple[int, int] = (4, 5)) -> Meta:
    return Meta(scan, (h, w), np.dtype("uint16"))


@pytest.mark.parametrize("b", [1, 2, 3])
def test_bf_pixels_and_binning_against_numpy(b):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 1000, (6, 32, 32)).astype(np.uint16)
    meta = _meta()
    udf = Parallax(radius=7.5, bin=b)
    plan = udf.plan(meta)
    out = {"bf": np.empty((6, plan.k.shape[0]), np.float32)}
    udf.process_tile(Tile(frames, np.arange(6)), out, udf.prepare(meta))
    # reference: every pixel within 7.5 px of (16, 16), summed over b x b blocks centred
    # on the centre (block index round-half-up of offset / b)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y in range(32):
        for x in range(32):
            if math.hypot(y - 16, x - 16) <= 7.5:
                key = (math.floor((y - 16) / b + 0.5), math.floor((x - 16) / b + 0.5))
                groups.setdefault(key, []).append((y, x))
    assert len(groups) == plan.k.shape[0] == int(out["bf"].shape[1])
    for j, kj in enumerate(plan.k):
        match = [g for g, px in groups.items()
                 if np.allclose(np.mean(px, axis=0) - 16, kj)]
        assert len(match) == 1
        ys, xs = zip(*groups[match[0]], strict=True)
        expected = frames[:, list(ys), list(xs)].astype(np.float64).sum(axis=1)
        np.testing.assert_allclose(out["bf"][:, j], expected)


def test_auto_binning_fits_the_budget():
    meta = _meta(128, 128, (128, 128))
    unbinned = Parallax(radius=32).plan(meta)
    assert unbinned.bin == 1
    assert unbinned.k.shape[0] == 3209  # 3209 x 16384 x 4 B = 210 MB
    budget = 32 * 2**20
    plan = Parallax(radius=32, max_bytes=budget).plan(meta)
    assert plan.bin > 1
    assert plan.k.shape[0] * meta.n_positions * 4 <= budget
    smaller = Parallax(radius=32, bin=plan.bin - 1).plan(meta)
    assert smaller.k.shape[0] * meta.n_positions * 4 > budget


def test_radius_is_needed_without_calibration():
    with pytest.raises(ValueError, match="radius"):
        Parallax().buffers(_meta())
    with pytest.raises(ValueError, match="radius: expected a positive"):
        Parallax(radius=-1)


@pytest.fixture(scope="module")
def defocused():
    return synthetic(scan=(24, 24), det=(48, 48), dose=1e6, semiconv=9, defocus=6,
                     step=2, smooth_phase=0.1, dtype="float32", calibrated=True)


def _filled(arr, udf: Parallax) -> tuple[dict[str, np.ndarray], Meta]:
    cal = Calibration.from_json(arr.attrs["calibration"])
    ny, nx, h, w = arr.shape
    meta = Meta((ny, nx), (h, w), np.dtype("float32"), calibration=cal)
    frames = np.asarray(arr.data).reshape(ny * nx, h, w)
    out = {"bf": np.empty((ny * nx, udf.plan(meta).k.shape[0]), np.float32)}
    udf.process_tile(Tile(frames, np.arange(ny * nx)), out, udf.prepare(meta))
    return out, meta


def test_partly_filled_scan_fits_on_complete_rows(defocused):
    udf = Parallax()
    full, meta = _filled(defocused, udf)
    whole = udf.finalize({"bf": full["bf"].copy()}, meta)
    part = full["bf"].copy()
    part[14 * 24 + 5:] = np.nan  # 14 complete rows, row 14 begun
    res = udf.finalize({"bf": part}, meta)
    assert res["fit_rows"] == 14
    assert res["defocus"] == pytest.approx(whole["defocus"], rel=0.1)
    # too few rows: no fit; the sum is the plain (unshifted) BF image
    few = full["bf"].copy()
    few[5 * 24:] = np.nan
    res = udf.finalize({"bf": few}, meta)
    assert res["fit_rows"] == 0
    assert np.isnan(res["defocus"])
    assert np.isnan(res["rotation"])
    np.testing.assert_allclose(res["tcbf"][:5 * 24], full["bf"][:5 * 24].sum(axis=1),
                               rtol=1e-5)


def test_progressive_results_through_the_engine(defocused):
    seen = 0
    arr = defocused.chunk({"scan_y": 6})
    for ds in framescope.iter_run(Parallax(), arr, client="sync"):
        done = ds["done"].values
        assert np.isnan(ds["tcbf"].values[~done]).all()
        assert np.isfinite(ds["tcbf"].values[done]).all()
        seen += 1
    assert seen > 1
    assert done.all()
    final = framescope.run(Parallax(), defocused, client="inline")
    np.testing.assert_allclose(ds["tcbf"], final["tcbf"], rtol=1e-5)
    assert int(final["fit_rows"]) == 24
