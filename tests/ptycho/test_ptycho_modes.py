"""Mixed-state probes: the update and the intensity model against numpy, mode
orthogonalisation, and recovery of a known two-mode probe by rPIE and the difference map."""

from __future__ import annotations

import numpy as np
import pytest
from _ptycho_helpers import phase_r, problem

from framescope.datasets._synthetic import SyntheticReader
from framescope.ptycho import RAAR, RPIE, initial_modes, orthogonalise, reconstruct
from framescope.ptycho._modes import mode_powers, rpie_modes_step
from framescope.ptycho._solver import fft_module

DOSE = 1e6
TRUE_POWER = (0.8, 0.2)


def _far(a):
    return np.fft.fft2(a) / np.sqrt(a.shape[-1] * a.shape[-2])


def _frames(modes, obj, corners):
    """The incoherent sum, one mode at a time: I = sum_k |F(P_k O_j)|^2."""
    h, w = modes.shape[-2:]
    out = np.zeros((len(corners), h, w))
    for j, (y, x) in enumerate(corners.astype(int)):
        for p in modes:
            out[j] += np.abs(_far(p * obj[y:y + h, x:x + w])) ** 2
    return out


@pytest.fixture(scope="module")
def two_modes():
    """A strong phase object scanned by two orthogonal modes: the synthetic defocused
    probe (80 % of the intensity) and the same probe moved 4 px in y, made orthogonal to
    the first (20 %); 10x10 positions, 3 px steps, 32x32 frames, no noise."""
    reader = SyntheticReader(scan=(10, 10), det=(32, 32), semiconv=5, defocus=4.0, step=3,
                             atom_phase=1.0, smooth_phase=1.0, seed=3)
    e1 = reader.probe / np.linalg.norm(reader.probe)
    other = np.roll(reader.probe, 4, axis=0)
    e2 = other - np.vdot(e1, other) * e1
    e2 /= np.linalg.norm(e2)
    modes = np.stack([e1 * np.sqrt(TRUE_POWER[0] * DOSE), e2 * np.sqrt(TRUE_POWER[1] * DOSE)])
    corners = np.array([(3 * i, 3 * j) for i in range(10) for j in range(10)], float)
    obj = np.exp(1j * reader.phase)
    amp = np.sqrt(_frames(modes, obj, corners)).astype(np.float32)
    cover = np.zeros(obj.shape)
    for y, x in corners.astype(int):
        cover[y:y + 32, x:x + 32] += np.abs(e1) ** 2
    region = cover >= 0.5 * cover.max()
    truth = reader.phase - reader.phase[region].mean()  # within +-pi: no wrap in phase_r
    return modes, obj, corners, amp, region, truth


def test_rpie_modes_step_matches_numpy():
    rng = np.random.default_rng(6)
    shape = (12, 10)
    obj = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    probe = (rng.normal(size=(3, *shape)) + 1j * rng.normal(size=(3, *shape)))
    probe = probe.astype(np.complex64)
    amp = rng.uniform(0.1, 3, size=shape).astype(np.float32)
    alpha, beta = 0.2, 0.7
    o, p = obj.astype(complex), probe.astype(complex)
    psi = p * o
    far = _far(psi)
    model = np.sqrt(np.sum(np.abs(far) ** 2, axis=0))
    dpsi = np.fft.ifft2(far * amp / model) * np.sqrt(psi[0].size) - psi
    s = np.sum(np.abs(p) ** 2, axis=0)
    o_ref = o + np.sum(np.conj(p) * dpsi, axis=0) / ((1 - alpha) * s + alpha * s.max())
    o2 = np.abs(o) ** 2
    p_ref = p + np.conj(o) * dpsi / ((1 - beta) * o2 + beta * o2.max())
    new_o, new_p, err = rpie_modes_step(obj, probe, amp, alpha=alpha, beta=beta,
                                          fft=fft_module(np))
    assert new_o.dtype == np.complex64
    np.testing.assert_allclose(new_o, o_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_p, p_ref, rtol=1e-4, atol=1e-5)
    assert float(err) == pytest.approx(np.sum((model - amp) ** 2), rel=1e-4)


@pytest.mark.parametrize("solver", [RPIE, RAAR])
def test_intensity_model_is_the_incoherent_sum(two_modes, solver):
    """True object and modes explain the numpy incoherent sum (error ~0); the first mode
    alone with all the intensity, a coherent probe, does not."""
    modes, obj, corners, amp, _, _ = two_modes
    exact = solver(modes, corners, obj=obj, probe_start=9)
    assert exact.iterate(amp) < 1e-8
    coherent = modes[0] / np.sqrt(TRUE_POWER[0])
    assert solver(coherent, corners, obj=obj, probe_start=9).iterate(amp) > 1e-3


def test_orthogonalise_keeps_the_mixed_state():
    rng = np.random.default_rng(7)
    probe = (rng.normal(size=(3, 6, 5)) + 1j * rng.normal(size=(3, 6, 5))).astype(np.complex64)
    probe[0] *= 0.2  # the weakest first: it must come out last
    new, u = orthogonalise(probe)
    flat, new_flat = probe.reshape(3, -1), new.reshape(3, -1)
    gram = new_flat @ new_flat.conj().T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-3 * abs(gram).max())
    power = np.diag(gram).real
    assert np.all(np.diff(power) < 0)
    # the same density matrix sum_k P_k P_k^H, so every modelled frame is the same
    np.testing.assert_allclose(new_flat.T @ new_flat.conj(), flat.T @ flat.conj(), atol=1e-3)
    np.testing.assert_allclose(u @ u.conj().T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(u @ flat, new_flat, atol=1e-4)
    again, _ = orthogonalise(new)  # already orthogonal: unchanged
    np.testing.assert_allclose(again, new, atol=1e-4 * abs(new).max())


def test_initial_modes_are_orthogonal_with_the_stated_power():
    probe = SyntheticReader(scan=(2, 2), det=(24, 24), semiconv=4, defocus=2.0).probe * 100
    modes = initial_modes(probe.astype(np.complex64), 3, power=0.04)
    assert modes.shape == (3, 24, 24)
    power = mode_powers(modes)
    np.testing.assert_allclose(power / power.sum(), [0.92, 0.04, 0.04], atol=1e-5)
    assert power.sum() == pytest.approx(np.sum(np.abs(probe) ** 2), rel=1e-5)
    flat = modes.reshape(3, -1).astype(complex)
    gram = flat @ flat.conj().T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5 * power.max())
    with pytest.raises(ValueError, match="modes"):
        initial_modes(probe, 0)


@pytest.mark.parametrize(("solver", "iterations"), [(RPIE, 20), (RAAR, 60)])
def test_two_modes_are_recovered(two_modes, solver, iterations):
    """From the coherent first mode (all the intensity): modes=2 fits clearly better than
    modes=1, the object correlates with the truth, and the mode powers come out 80/20.
    RAAR here is the difference map (beta 1): with beta 0.75 the modes grow slower."""
    modes, _, corners, amp, region, truth = two_modes
    start = (modes[0] / np.sqrt(TRUE_POWER[0])).astype(np.complex64)
    kw = {"beta": 1.0} if solver is RAAR else {}
    errors, objects = {}, {}
    for k in (1, 2):
        s = solver(start if k == 1 else initial_modes(start, 2), corners, (59, 59),
                   probe_start=2, **kw)
        for _ in range(iterations):
            errors[k] = s.iterate(amp)
        objects[k] = s.object
    assert errors[2] < errors[1] / 4, errors
    r = phase_r(np.angle(objects[2]), truth, region)
    assert r >= 0.95, r
    power = mode_powers(s.probe)
    np.testing.assert_allclose(power / power.sum(), TRUE_POWER, atol=0.03)


def test_reconstruct_with_modes_gives_a_mode_dim():
    arr, _, defocus = problem(scan=(6, 6))
    ds = reconstruct(arr, iterations=3, defocus=defocus, modes=2, client="inline")
    assert ds["probe_amplitude"].dims == ("mode", "probe_y", "probe_x")
    assert ds["probe_phase"].sizes["mode"] == 2
    assert ds.attrs["modes"] == 2
    power = ds["probe_power"].values
    assert power.sum() == pytest.approx(1)
    assert power[0] > power[1]
    one = reconstruct(arr, iterations=3, defocus=defocus, algorithm="raar", client="inline")
    assert one["probe_amplitude"].dims == ("probe_y", "probe_x")
    assert one.attrs["modes"] == 1
    assert "probe_power" not in one
    with pytest.raises(ValueError, match="modes"):
        reconstruct(arr, modes=0)
