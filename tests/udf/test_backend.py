"""Array backends: numpy always; cupy where a GPU is present (skipped cleanly otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.engine import run
from framescope.udf import ApplyMasks, CenterOfMass, FrameStats, SumFrame
from framescope.udf._backend import cupy_available, resolve_backend, to_host

needs_gpu = pytest.mark.skipif(not cupy_available(), reason="cupy with a CUDA device needed")

rng = np.random.default_rng(21)
REF = rng.integers(0, 3000, (5, 7, 24, 20)).astype("uint16")
MASKS = {"bf": fm.disk(12, 10, 4), "adf": fm.ring(12, 10, 6, 11),
         "soft": fm.array(rng.random((24, 20)).astype("float32"))}


def test_numpy_is_the_default():
    assert resolve_backend(None, np.empty((1, 1, 1, 1))) == "numpy"
    assert resolve_backend(None, framescope.from_array(REF).data) == "numpy"
    with pytest.raises(ValueError, match="expected one of"):
        resolve_backend("opencl")


@pytest.mark.skipif(cupy_available(), reason="checks the error without a GPU")
def test_cupy_without_a_gpu_is_a_clear_error():
    arr = framescope.from_array(REF)
    with pytest.raises(RuntimeError, match="cupy is not installed or sees no CUDA device"):
        run(SumFrame(), arr, client="inline", backend="cupy")


def _udfs():
    return {"masks": ApplyMasks(MASKS), "com": CenterOfMass(radius=8), "sum": SumFrame(),
            "stats": FrameStats()}


@needs_gpu
@pytest.mark.parametrize("name", ["masks", "com", "sum", "stats"])
@pytest.mark.parametrize("executor", ["inline", "dask"])
def test_cupy_matches_numpy(name, executor, client, tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, REF)
    arr = framescope.open(path, chunks=2)
    c = "inline" if executor == "inline" else client
    cpu = run(_udfs()[name], arr, client=c, backend="numpy")
    gpu = run(_udfs()[name], arr, client=c, backend="cupy")
    for key in cpu.data_vars:
        np.testing.assert_allclose(gpu[key].values, cpu[key].values, rtol=1e-5, atol=1e-3)


@needs_gpu
def test_cupy_blocks_pick_the_cupy_backend():
    import cupy
    import dask.array as da

    dev = da.from_array(cupy.asarray(REF), chunks=(2, 7, 24, 20), asarray=False)
    arr = framescope.from_array(dev)
    assert resolve_backend(None, arr.data) == "cupy"
    got = arr.fs.virtual_image(MASKS, client="inline", cache=False)
    want = np.einsum("yxhw,khw->yxk", REF.astype("f8"),
                     fm.MaskStack.from_any(MASKS).dense((24, 20)).T.reshape(3, 24, 20))
    np.testing.assert_allclose(to_host(got.values), want, rtol=1e-5)
