"""The rPIE update against a numpy reference, and the solver's forward model against the
synthetic data's own (probe, positions, rotation, flip, FFT layout)."""

from __future__ import annotations

import numpy as np
import pytest

from framescope.datasets._synthetic import SyntheticReader
from framescope.ptycho import RPIE, amplitudes, initial_probe, rpie_step, scan_positions


def _reference_step(obj, probe, amp, alpha, beta):
    """rPIE (Maiden et al. 2017) in plain numpy, complex128."""
    psi = probe * obj
    far = np.fft.fft2(psi) / np.sqrt(psi.size)
    err = np.sum((np.abs(far) - amp) ** 2)
    projected = amp * np.exp(1j * np.angle(far))
    dpsi = np.fft.ifft2(projected) * np.sqrt(psi.size) - psi
    p2, o2 = np.abs(probe) ** 2, np.abs(obj) ** 2
    new_obj = obj + np.conj(probe) * dpsi / ((1 - alpha) * p2 + alpha * p2.max())
    new_probe = probe + np.conj(obj) * dpsi / ((1 - beta) * o2 + beta * o2.max())
    return new_obj, new_probe, err


@pytest.mark.parametrize(("alpha", "beta"), [(0.1, 1.0), (1.0, 1.0), (0.3, 0.5)])
def test_one_rpie_update_matches_numpy(alpha, beta):
    rng = np.random.default_rng(1)
    shape = (12, 10)
    obj = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    probe = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    amp = rng.uniform(0.1, 3, size=shape).astype(np.float32)
    o_ref, p_ref, e_ref = _reference_step(obj.astype(complex), probe.astype(complex),
                                          amp.astype(float), alpha, beta)
    o, p, e = rpie_step(obj, probe, amp, alpha=alpha, beta=beta)
    assert o.dtype == np.complex64
    assert p.dtype == np.complex64
    np.testing.assert_allclose(o, o_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p, p_ref, rtol=1e-4, atol=1e-5)
    assert float(e) == pytest.approx(e_ref, rel=1e-4)
    # without the probe update the probe comes back unchanged
    _, same, _ = rpie_step(obj, probe, amp, alpha=alpha, beta=beta, update_probe=False)
    np.testing.assert_array_equal(same, probe)


def test_masked_pixels_keep_the_far_field():
    rng = np.random.default_rng(2)
    shape = (8, 8)
    obj = np.exp(1j * rng.normal(size=shape)).astype(np.complex64)
    probe = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    mask = np.ones(shape, bool)
    mask[2, 3] = False
    psi = probe * obj
    far = np.fft.fft2(psi, norm="ortho")
    amp = np.abs(far).astype(np.float32)
    amp[2, 3] = 100.0  # a hot pixel: masked, it must neither pull nor count
    o, _, e = rpie_step(obj, probe, amp, alpha=1.0, mask=mask)
    np.testing.assert_allclose(o, obj, atol=1e-5)
    assert float(e) < 1e-8


def test_initial_probe_is_the_synthetic_probe():
    det, semiconv, defocus_rad, dose = (32, 32), 5.0, 4.0, 1e6
    reader = SyntheticReader(scan=(2, 2), det=det, semiconv=semiconv, defocus=defocus_rad,
                             dose=dose)
    cal = reader.calibration()
    lam = cal.wavelength
    defocus_m = defocus_rad * lam / (np.pi * cal.semiconv**2)  # chi at the rim
    probe = initial_probe(det, wavelength=lam, angle_per_px=cal.angle_per_px,
                          semiconv=cal.semiconv, defocus=defocus_m, intensity=dose)
    np.testing.assert_allclose(probe, reader.probe * np.sqrt(dose), atol=1e-3 * np.sqrt(dose)
                               * np.abs(reader.probe).max())


@pytest.mark.parametrize(("rotation", "flip"), [(0.0, False), (0.4, True), (np.pi / 2, False)])
def test_forward_model_matches_the_synthetic_frames(rotation, flip):
    """True object and probe at the calibrated positions give the synthetic's expected
    frames: error ~0 (sub-pixel probes for the rotated scans)."""
    reader = SyntheticReader(scan=(5, 6), det=(24, 24), semiconv=4, defocus=2.0, step=2,
                             dose=1e4, rotation=rotation, flip=flip, noise=False,
                             dtype="float32")
    cal = reader.calibration()
    pixel = (cal.scan_step[0] / 2,) * 2
    corners, _ = scan_positions(reader.scan_shape, cal.scan_step, pixel,
                                rotation=cal.rotation, flip=cal.flip)
    expected = reader.expected(0, reader.n_frames)
    solver = RPIE(reader.probe * np.sqrt(1e4), corners, reader.object_shape,
                  obj=np.exp(1j * reader.phase), probe_start=5)
    err = solver.iterate(amplitudes(expected))
    assert err < 1e-8
    # a wrong rotation does not fit: the test can fail
    wrong, _ = scan_positions(reader.scan_shape, cal.scan_step, pixel,
                              rotation=cal.rotation + 0.3, flip=cal.flip)
    bad = RPIE(reader.probe * 100, wrong, obj=np.ones((60, 60)), probe_start=5)
    bad.object[:reader.object_shape[0], :reader.object_shape[1]] = np.exp(1j * reader.phase)
    assert bad.iterate(amplitudes(expected)) > 1e-4


def test_unmeasured_positions_are_skipped_and_order_is_seeded():
    rng = np.random.default_rng(3)
    probe = (rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))).astype(np.complex64)
    corners = np.array([[0, 0], [0, 2], [2, 0], [2, 2]], float)
    amp = rng.uniform(0, 2, size=(4, 8, 8)).astype(np.float32)
    measured = np.array([True, False, True, True])
    a = RPIE(probe, corners, seed=7)
    b = RPIE(probe, corners, seed=7)
    nan_amp = amp.copy()
    nan_amp[1] = np.nan  # never read
    a.iterate(amp, measured)
    b.iterate(nan_amp, measured)
    np.testing.assert_array_equal(a.object, b.object)
    assert np.isfinite(b.object).all()
    assert b.measured == [3]
    c = RPIE(probe, corners, seed=8)
    c.iterate(amp, measured)
    assert not np.array_equal(a.object, c.object)  # another order, another result
