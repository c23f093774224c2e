"""RAAR / difference map: iterations against a plain-numpy loop written from the formulas,
and reconstruction of the small synthetic problem."""

from __future__ import annotations

import numpy as np
import pytest
from _ptycho_helpers import illuminated, phase_r, problem

from framescope.ptycho import RAAR, reconstruct

REG = 1e-3


def _ortho(a):
    return np.fft.fft2(a) / np.sqrt(a.shape[-1] * a.shape[-2])


def _iortho(a):
    return np.fft.ifft2(a) * np.sqrt(a.shape[-1] * a.shape[-2])


class _Reference:
    """RAAR in complex128 numpy, whole-pixel positions, modes on axis 0 of the probe."""

    def __init__(self, probe, corners, obj, beta, probe_start, inner):
        self.p, self.o = probe.astype(complex), obj.astype(complex)
        self.c = corners.astype(int)
        self.beta, self.probe_start, self.inner = beta, probe_start, inner
        self.psi = {}
        self.it = 0
        self.h, self.w = probe.shape[-2:]

    def win(self, j):
        y, x = self.c[j]
        return (slice(y, y + self.h), slice(x, x + self.w))

    def step(self, amp, measured, mask):
        ids = [j for j in range(len(self.c)) if measured[j]]
        for j in ids:
            if j not in self.psi:
                self.psi[j] = self.p * self.o[self.win(j)]
        upd = self.it >= self.probe_start
        for _ in range(self.inner if upd else 1):
            num = np.zeros_like(self.o)
            den = np.zeros(self.o.shape)
            for j in ids:
                num[self.win(j)] += np.sum(np.conj(self.p) * self.psi[j], axis=0)
                den[self.win(j)] += np.sum(np.abs(self.p) ** 2, axis=0)
            r = REG * den.max()
            self.o = (num + r * self.o) / (den + r)
            if not upd:
                break
            num_p = sum(np.conj(self.o[self.win(j)]) * self.psi[j] for j in ids)
            den_p = sum(np.abs(self.o[self.win(j)]) ** 2 for j in ids)
            r = REG * den_p.max()
            self.p = (num_p + r * self.p) / (den_p + r)
        if upd and len(self.p) > 1:  # any orthogonalising unitary: the model is the same
            k = len(self.p)
            _, v = np.linalg.eigh(self.p.reshape(k, -1) @ self.p.reshape(k, -1).conj().T)
            self.p = np.einsum("ab,byx->ayx", v.conj().T, self.p)
            for j in self.psi:
                self.psi[j] = np.einsum("ab,byx->ayx", v.conj().T, self.psi[j])
        err = tot = 0.0
        for j in ids:
            pO = self.p * self.o[self.win(j)]
            model = np.sqrt(np.sum(np.abs(_ortho(pO)) ** 2, axis=0))
            err += np.sum(((model - amp[j]) * mask) ** 2)
            tot += np.sum((amp[j] * mask) ** 2)
            far = _ortho(2 * pO - self.psi[j])
            modulus = np.sqrt(np.sum(np.abs(far) ** 2, axis=0))
            factor = np.where(mask, amp[j] / np.maximum(modulus, 1e-12), 1.0)
            pF = _iortho(far * factor)
            self.psi[j] = self.beta * (self.psi[j] + pF - pO) + (1 - self.beta) * pO
        self.it += 1
        return err / tot


def _tiny(modes):
    rng = np.random.default_rng(5)
    corners = np.array([(y, x) for y in (0, 3, 6) for x in (0, 3, 6)], float)
    shape = (modes, 8, 8)
    probe = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    probe[1:] *= 0.3
    obj = np.exp(1j * rng.normal(0, 0.5, size=(14, 14))).astype(np.complex64)
    amp = rng.uniform(0.5, 3, size=(9, 8, 8)).astype(np.float32)
    mask = np.ones((8, 8), bool)
    mask[0, 3] = mask[5, 5] = False
    return probe, corners, obj, amp, mask


@pytest.mark.parametrize(("beta", "modes"), [(0.75, 1), (1.0, 1), (0.6, 2)])
def test_raar_iterations_match_numpy(beta, modes):
    """Three iterations: the probe fixed in the first, one position joining in the
    third (a live frame), two masked detector pixels."""
    probe, corners, obj, amp, mask = _tiny(modes)
    flat = probe[0] if modes == 1 else probe
    solver = RAAR(flat, corners, obj=obj, beta=beta, probe_start=1, overlap_iterations=2)
    ref = _Reference(probe, corners, obj, beta, 1, 2)
    late = np.ones(9, bool)
    late[4] = False
    for i in range(3):
        measured = late if i < 2 else np.ones(9, bool)
        e = solver.iterate(amp, measured, mask)
        e_ref = ref.step(amp.astype(float), measured, mask)
        assert e == pytest.approx(e_ref, rel=1e-4)
    assert solver.probe.shape == flat.shape
    np.testing.assert_allclose(solver.object, ref.o, rtol=1e-3, atol=1e-4)
    # compare the mixed state itself: modes are defined up to a unitary mixing
    got = np.asarray(solver.probe).reshape(modes, -1)
    want = ref.p.reshape(modes, -1)
    scale = np.abs(want).max() ** 2
    np.testing.assert_allclose(got.T @ got.conj() / scale, want.T @ want.conj() / scale,
                               atol=1e-4)
    assert solver.measured == [8, 8, 9]
    assert solver.iteration == 3


def test_unmeasured_positions_take_no_part():
    probe, corners, obj, amp, _ = _tiny(1)
    measured = np.ones(9, bool)
    measured[[2, 7]] = False
    a = RAAR(probe[0], corners, obj=obj)
    b = RAAR(probe[0], corners, obj=obj)
    nan_amp = amp.copy()
    nan_amp[[2, 7]] = np.nan  # never read
    for _ in range(2):
        a.iterate(amp, measured)
        b.iterate(nan_amp, measured)
    np.testing.assert_array_equal(a.object, b.object)
    assert np.isfinite(b.object).all()
    assert not b.started[[2, 7]].any()
    with pytest.raises(ValueError, match=r"amplitudes: expected shape \(9, 8, 8\)"):
        a.iterate(amp[:, :4])
    with pytest.raises(ValueError, match="beta"):
        RAAR(probe[0], corners, beta=0)


@pytest.mark.parametrize("algorithm", ["raar", "dm"])
def test_raar_reconstructs_the_true_phase(algorithm):
    arr, reader, defocus = problem()
    ds = reconstruct(arr, iterations=ITERATIONS, defocus=defocus, algorithm=algorithm,
                     client="inline")
    region = illuminated(ds)
    r = phase_r(ds["object_phase"].values, reader.phase, region)
    assert r >= 0.95, r
    err = ds["error"].values
    assert err[-1] < err[0] / 3
    assert ds.attrs["algorithm"] == algorithm
    assert ds.attrs["raar_beta"] == (1.0 if algorithm == "dm" else 0.75)
    assert "alpha" not in ds.attrs


ITERATIONS = 15  # the stated budget for RAAR and DM: r >= 0.95 within 15 iterations


def test_dm_is_raar_with_beta_one():
    arr, _, _ = problem(scan=(4, 4))
    with pytest.raises(ValueError, match="dm"):
        reconstruct(arr, algorithm="dm", raar_beta=0.5)
