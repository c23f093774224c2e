"""The solver on a GPU (cupy) equals the numpy solver; skipped without a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest
from _ptycho_helpers import problem

from framescope.ptycho import RPIE, reconstruct
from framescope.udf._backend import cupy_available

pytestmark = pytest.mark.skipif(not cupy_available(), reason="needs cupy and a CUDA device")


def test_rpie_sweeps_on_cupy_equal_numpy():
    import cupy

    rng = np.random.default_rng(4)
    probe = (rng.normal(size=(16, 16)) + 1j * rng.normal(size=(16, 16))).astype(np.complex64)
    corners = rng.uniform(0, 10, size=(12, 2))  # sub-pixel: the Fourier-shift path too
    amp = rng.uniform(0, 2, size=(12, 16, 16)).astype(np.float32)
    host = RPIE(probe, corners, seed=1, probe_start=1)
    device = RPIE(cupy.asarray(probe), corners, seed=1, probe_start=1)
    assert isinstance(device.object, cupy.ndarray)
    for _ in range(3):
        e_host = host.iterate(amp)
        e_dev = device.iterate(cupy.asarray(amp))
        assert e_dev == pytest.approx(e_host, rel=1e-4)
    np.testing.assert_allclose(device.object.get(), host.object, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(device.probe.get(), host.probe, rtol=1e-3, atol=1e-4)


def test_reconstruct_on_cupy_equals_numpy():
    arr, _, defocus = problem(scan=(8, 8))
    host = reconstruct(arr, iterations=4, defocus=defocus, client="inline")
    gpu = reconstruct(arr, iterations=4, defocus=defocus, client="inline", backend="cupy")
    assert gpu.attrs["backend"] == "cupy"
    np.testing.assert_allclose(gpu["object_phase"], host["object_phase"], atol=1e-3)
