"""rPIE's probe step: a fraction of each position's probe update, steadier under noise."""

from __future__ import annotations

import numpy as np
import pytest

from framescope.ptycho import RPIE, ptycho_experiment, reconstruct, rpie_step


def test_the_probe_update_is_scaled_and_the_object_update_is_not():
    rng = np.random.default_rng(0)
    obj = np.exp(1j * rng.normal(0, 0.3, (8, 8))).astype("c8")
    probe = (rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))).astype("c8")
    amp = np.abs(np.fft.fft2(probe * obj * 1.1, norm="ortho")).astype("f4")
    o1, p1, e1 = rpie_step(obj, probe, amp)
    o2, p2, e2 = rpie_step(obj, probe, amp, probe_step=0.25)
    np.testing.assert_array_equal(o1, o2)
    assert e1 == e2
    # numpy: the published update, a quarter of it
    psi = probe * obj
    far = np.fft.fft2(psi, norm="ortho")
    dpsi = np.fft.ifft2(far * amp / np.maximum(np.abs(far), 1e-30), norm="ortho") - psi
    full = np.conj(obj) * dpsi / np.max(np.abs(obj) ** 2)
    np.testing.assert_allclose(p1, probe + full, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p2, probe + 0.25 * full, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="probe_step: expected 0 < probe_step <= 1"):
        RPIE(probe, np.zeros((1, 2)), probe_step=0)


def test_a_smaller_probe_step_keeps_the_error_down_on_noisy_frames():
    exp = ptycho_experiment("electron", scan=(16, 16), det=(32, 32), step=3, dose=1e5,
                            seed=1)
    full = reconstruct(exp.frames, iterations=8, defocus=exp.defocus, client="inline")
    small = reconstruct(exp.frames, iterations=8, defocus=exp.defocus, client="inline",
                        probe_step=0.1)
    assert small.attrs["probe_step"] == 0.1
    assert "probe_step" not in full.attrs
    # the full step makes the probe follow every frame's noise: the error rises once the
    # probe is updated (sweep 2 on); a tenth of it stays near the fixed-probe level
    assert full["error"].values[-1] > full["error"].values[1]
    assert small["error"].values[-1] < full["error"].values[-1]
