"""SSB ptychography against a plain-numpy evaluation of the formula on the same frames, an
object simulated here with exact truth, and the synthetic dataset's known phase."""

from __future__ import annotations

import math

import numpy as np
import pytest

import framescope
from framescope.calibration import Calibration, electron_wavelength
from framescope.datasets import synthetic
from framescope.datasets._physics import convergent_probe
from framescope.udf import SSB, Meta, Tile
from framescope.udf._backend import cupy_available

E, PX = 300e3, 0.2e-10  # eV; object pixel (m)
LAM = electron_wavelength(E)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _cal(det: int, semiconv_px: float, **kw) -> Calibration:
    angle = LAM / (det * PX)
    fields = {"energy": E, "semiconv": semiconv_px * angle, "angle_per_px": angle,
              "center": (det // 2, det // 2), "scan_step": (PX, PX)}
    fields.update(kw)
    return Calibration(**fields)


def _run_direct(udf: SSB, frames: np.ndarray, cal: Calibration) -> dict[str, np.ndarray]:
    ny, nx, h, w = frames.shape
    meta = Meta((ny, nx), (h, w), frames.dtype, calibration=cal)
    res = {k: b.allocate(meta) for k, b in udf.buffers(meta).items()}
    state = udf.prepare(meta)
    flat = frames.reshape(-1, h, w)
    for lo in range(0, ny * nx, 7):  # several tiles of uneven length
        hi = min(lo + 7, ny * nx)
        views = {k: (v[lo:hi] if udf.buffers(meta)[k].kind == "nav" else v)
                 for k, v in res.items()}
        udf.process_tile(Tile(flat[lo:hi], np.arange(lo, hi)), views, state)
    return {k: v.reshape(ny, nx) for k, v in udf.finalize(res, meta).items()}


def _reference(frames: np.ndarray, cal: Calibration, defocus: float, rotation: float,
               flip: bool, complex_object: bool) -> np.ndarray:
    """The SSB formula evaluated directly: G by FFT over the scan axes, trotters pixel by
    pixel, every frequency of the whole plane on its own (no GEMM, no phase tables, no
    symmetry). Returns the complex object ``1 + o``, or the phase of a phase object."""
    ny, nx, h, w = frames.shape
    g = np.fft.fft2(frames.astype(np.float64), axes=(0, 1))
    per = cal.angle_per_px / LAM
    ky = (np.arange(h) - cal.center[0]) * per
    kx = (np.arange(w) - cal.center[1]) * per
    ky, kx = np.meshgrid(ky, kx, indexing="ij")
    ka = cal.semiconv / LAM
    bf = ky**2 + kx**2 < ka**2
    i0 = frames.reshape(-1, h, w)[:, bf].mean()
    c, s = math.cos(rotation), math.sin(rotation)
    m = np.array([[c, -s], [s, c]])
    if flip:
        m[0] *= -1

    def chi(y, x):
        return math.pi * LAM * defocus * (y**2 + x**2)

    spec = np.zeros((ny, nx), complex)
    for jy in range(ny):
        for jx in range(nx):
            if jy == 0 and jx == 0:
                continue
            f = np.array([np.fft.fftfreq(ny)[jy] / PX, np.fft.fftfreq(nx)[jx] / PX])
            qy, qx = m @ f
            if qy**2 + qx**2 >= 4 * ka**2:
                continue
            left = bf & ((ky - qy) ** 2 + (kx - qx) ** 2 < ka**2)
            right = bf & ((ky + qy) ** 2 + (kx + qx) ** 2 < ka**2)
            lo, ro = left & ~right, right & ~left
            # G = I0 [O(Q) p(k-Q) p*(k) + O*(-Q) p(k) p*(k+Q)], p = A exp(-i chi)
            wl = np.exp(1j * (chi(ky - qy, kx - qx) - chi(ky, kx)))  # conj(p(k-Q) p*(k))
            if complex_object:  # O(Q) from the left trotter alone
                if lo.any():
                    spec[jy, jx] = (g[jy, jx][lo] * wl[lo]).sum() / lo.sum() / i0
                continue
            # o = i phi: O(Q) = i Phi(Q) on the left, O*(-Q) = -i Phi(Q) on the right
            wr = np.exp(-1j * (chi(ky + qy, kx + qx) - chi(ky, kx)))  # conj(p(k) p*(k+Q))
            if lo.any() or ro.any():
                total = (g[jy, jx][lo] * wl[lo] / 1j).sum() + (g[jy, jx][ro] * wr[ro] / -1j).sum()
                spec[jy, jx] = total / (lo.sum() + ro.sum()) / i0
    if complex_object:
        return 1 + np.fft.ifft2(spec)
    return np.fft.ifft2(spec).real


@pytest.mark.parametrize("obj", ["phase", "complex"])
@pytest.mark.parametrize(("defocus", "rotation", "flip"),
                         [(0.0, 0.0, False), (12e-9, 0.4, True)])
def test_ssb_equals_the_formula_evaluated_in_numpy(defocus, rotation, flip, obj):
    rng = np.random.default_rng(1)
    # non-square, odd scan: even sides have Nyquist bins, where Q and -Q are one bin and
    # the direct evaluation below picks one of the two physical frequencies
    frames = rng.poisson(50.0, size=(5, 7, 16, 16)).astype(np.uint16)
    cal = _cal(16, 5.0, rotation=rotation, flip=flip)
    got = _run_direct(SSB(defocus=defocus, object=obj), frames, cal)
    want = _reference(frames, cal, defocus, rotation, flip, obj == "complex")
    if obj == "complex":
        np.testing.assert_allclose(got["phase"], np.angle(want), atol=2e-5)
        np.testing.assert_allclose(got["amplitude"], np.abs(want), atol=2e-5)
    else:
        assert "amplitude" not in got
        np.testing.assert_allclose(got["phase"], want, atol=2e-5)
    h, w = 16, 16
    per = cal.angle_per_px / LAM
    yy, xx = np.mgrid[:h, :w]
    bf = ((yy - 8) * per) ** 2 + ((xx - 8) * per) ** 2 < (cal.semiconv / LAM) ** 2
    np.testing.assert_allclose(got["bright_field"], frames[..., bf].sum(-1), rtol=1e-6)


def _periodic_frames(n: int, det: int, semiconv: float, defocus_rad: float = 0.0):
    """Frames of a weak phase object periodic over the scan (n x n, step one object px):
    the DFT over the scan is then exact and the truth is the object itself."""
    rng = np.random.default_rng(0)
    spec = np.zeros((n, n), complex)
    for _ in range(40):
        jy, jx = rng.integers(-5, 6, 2)
        spec[jy % n, jx % n] += rng.normal() + 1j * rng.normal()
    phi = np.fft.ifft2(spec).real
    phi *= 0.04 / phi.std()
    reps = -(-(n + det) // n)
    obj = np.tile(np.exp(1j * phi), (reps, reps))
    probe = convergent_probe((det, det), semiconv, defocus_rad)
    ramp = np.exp(2j * np.pi * (det // 2) * (np.arange(det)[:, None] + np.arange(det)) / det)
    frames = np.empty((n, n, det, det), np.float32)
    for iy in range(n):
        for ix in range(n):
            wave = obj[iy:iy + det, ix:ix + det] * probe * ramp
            frames[iy, ix] = np.abs(np.fft.fft2(wave, norm="ortho")) ** 2 * 1e6
    # the probe centre of position (iy, ix) is object pixel (iy + det//2, ix + det//2)
    truth = np.roll(phi, (-(det // 2) % n, -(det // 2) % n), axis=(0, 1))
    return frames, truth


@pytest.mark.parametrize("obj", ["phase", "complex"])
@pytest.mark.parametrize("defocus_rad", [0.0, 5.0])
def test_ssb_recovers_a_periodic_weak_phase_object(defocus_rad, obj):
    n, det, sc = 24, 48, 9
    frames, truth = _periodic_frames(n, det, sc, defocus_rad)
    cal = _cal(det, sc)
    defocus = defocus_rad * LAM / (math.pi * cal.semiconv**2)
    got = _run_direct(SSB(defocus=defocus, object=obj), frames, cal)
    assert _corr(got["phase"], truth) > 0.99
    # the transfer per frequency: ~1 inside the band (low frequencies have thin trotters)
    spec = np.fft.fft2(truth)
    strong = np.abs(spec) > 0.2 * np.abs(spec).max()
    ratio = np.fft.fft2(got["phase"])[strong] / spec[strong]
    assert np.all(np.abs(ratio - 1) < 0.25)
    if obj == "complex":
        assert np.abs(got["amplitude"] - 1).max() < 0.02  # a pure phase object
    if defocus_rad:  # uncorrected, the defocused data do not give the object
        wrong = _run_direct(SSB(object=obj), frames, cal)
        assert _corr(wrong["phase"], truth) < 0.8


def _interior(a: np.ndarray, b: int) -> np.ndarray:
    return a[b:-b, b:-b]


SYN = {"scan": (40, 40), "det": (48, 48), "semiconv": 9, "dose": 1e6, "atom_phase": 0.05,
       "smooth_phase": 0.0, "calibrated": True, "seed": 3}


@pytest.mark.parametrize("geometry", [{}, {"rotation": 0.5, "flip": True},
                                      {"defocus": 6.0}])
def test_ssb_phase_correlates_with_the_synthetic_truth(geometry):
    """Atoms (no long waves: SSB's transfer vanishes at low frequency) with Poisson noise;
    compared away from the scan's edges, where frames see object outside the scan."""
    arr = synthetic(**{**SYN, **geometry})
    cal = arr.fs.calibration
    defocus = geometry.get("defocus", 0.0) * cal.wavelength / (math.pi * cal.semiconv**2)
    ds = arr.fs.ssb(defocus=defocus, progress=False)
    assert ds["phase"].attrs["units"] == "rad"
    assert ds.attrs["ssb_defocus_m"] == pytest.approx(defocus)
    truth = arr.true_phase.values
    assert _corr(_interior(ds["phase"].values, 6), _interior(truth, 6)) > 0.9


def test_progressive_results_fill_in_and_end_at_the_full_run():
    arr = synthetic(**{**SYN, "scan": (16, 16)})
    full = arr.fs.ssb(progress=False)
    seen = []
    for partial in framescope.iter_run(SSB(), arr, client="inline"):
        phase = partial["phase"].values
        done = partial["done"].values
        assert np.isfinite(phase[done]).all()
        assert np.isnan(phase[~done]).all()
        seen.append(int(done.sum()))
    assert seen[-1] == 256
    np.testing.assert_allclose(phase, full["phase"].values, atol=1e-6)


def test_binning_keeps_the_image_and_is_chosen_under_a_memory_budget():
    arr = synthetic(**{**SYN, "scan": (24, 24)})
    one = arr.fs.ssb(bin=1, progress=False)
    two = arr.fs.ssb(bin=2, progress=False)
    assert two.attrs["ssb_bin"] == 2
    assert two.attrs["ssb_bf_pixels"] < one.attrs["ssb_bf_pixels"] / 3
    assert _corr(one["phase"].values, two["phase"].values) > 0.9
    auto = arr.fs.ssb(max_memory=one.attrs["ssb_memory_bytes"] - 1, progress=False)
    assert auto.attrs["ssb_bin"] > 1
    assert auto.attrs["ssb_memory_bytes"] < one.attrs["ssb_memory_bytes"]


def test_ssb_names_what_the_calibration_lacks():
    arr = synthetic(scan=(4, 4), det=(16, 16)).fs.calibrate(energy="300 kV")
    with pytest.raises(ValueError, match=r"angle_per_px.*semiconv.*scan_step"):
        arr.fs.ssb(progress=False)
    with pytest.raises(ValueError, match="defocus"):
        SSB(defocus="3 mrad")
    with pytest.raises(ValueError, match="'phase' or 'complex'"):
        SSB(object="amplitude")


@pytest.mark.skipif(not cupy_available(), reason="cupy with a CUDA device needed")
def test_ssb_on_cupy_equals_numpy():
    arr = synthetic(**{**SYN, "scan": (12, 12), "det": (32, 32), "semiconv": 6})
    host = framescope.run(SSB(), arr, client="inline")
    gpu = framescope.run(SSB(), arr, client="inline", backend="cupy")
    np.testing.assert_allclose(gpu["phase"].values, host["phase"].values, atol=1e-4)
