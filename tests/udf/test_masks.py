from __future__ import annotations

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.engine import _tasks
from framescope.engine._cache import results
from framescope.errors import MaskError
from framescope.udf import ApplyMasks

MASKS = {
    "bf": fm.disk(8, 9, 3.5),
    "adf": fm.ring(8, 9, 4, 8),
    "tiny": fm.point(2, 3),  # gathered: far below the window fill threshold
    "box": fm.box(0, 0, 17, 19),
    "poly": fm.polygon([(1, 1), (14, 3), (12, 17), (5, 12)]),
}


@pytest.fixture(params=["uint8", "uint16", "uint32", "float32"])
def dataset(request, tmp_path):
    rng = np.random.default_rng(11)
    ref = rng.integers(0, 255, size=(13, 17, 17, 19)).astype(request.param)
    path = tmp_path / "d.raw"
    path.write_bytes(ref.tobytes())
    return framescope.open(path, shape=ref.shape, dtype=request.param, chunks=3), ref


def _reference(ref, stack):
    dense = np.stack([stack[n].rasterize(ref.shape[2:]) for n in stack.names], -1)
    return np.einsum("ijkl,klm->ijm", ref.astype("f8"), dense.astype("f8"))


@pytest.mark.parametrize("executor", ["inline", "dask"])
def test_virtual_images_match_numpy(dataset, executor, client, monkeypatch):
    arr, ref = dataset
    monkeypatch.setattr(_tasks, "TILE_BYTES", 5 * 17 * 19 * 4)  # tiles of ~5 frames: edges
    stack = fm.MaskStack(MASKS)
    c = "inline" if executor == "inline" else client
    got = arr.fs.virtual_image(stack, client=c, cache=False)
    assert got.dims == ("scan_y", "scan_x", "mask")
    assert list(got.mask.values) == list(stack.names)
    np.testing.assert_allclose(got.values, _reference(ref, stack), rtol=2e-6)
    mem = framescope.from_array(ref, chunks=(5, 6, 17, 19))  # blocks cut scan rows
    np.testing.assert_allclose(mem.fs.virtual_image(stack, client=c, cache=False).values,
                               _reference(ref, stack), rtol=2e-6)


def test_single_mask_gives_an_image_with_its_definition(dataset):
    arr, ref = dataset
    ring = fm.ring(8, 9, 4, 8)
    img = arr.fs.virtual_image(ring, client="inline", cache=False)
    assert img.dims == ("scan_y", "scan_x")
    np.testing.assert_allclose(img, _reference(ref, fm.MaskStack([ring]))[..., 0], rtol=2e-6)
    assert fm.MaskStack.from_json(img.attrs["masks"]).key == fm.MaskStack([ring]).key
    assert img.attrs["framescope_version"] == framescope.__version__


def test_roi_leaves_nan_outside(dataset):
    arr, ref = dataset
    roi = np.zeros((13, 17), bool)
    roi[3:7, 2:15] = True
    img = arr.fs.virtual_image(fm.disk(8, 9, 3), roi=roi, client="inline", cache=False).values
    expected = _reference(ref, fm.MaskStack([fm.disk(8, 9, 3)]))[..., 0]
    np.testing.assert_allclose(img[roi], expected[roi], rtol=2e-6)
    assert np.isnan(img[~roi]).all()


def test_adding_a_mask_computes_only_that_mask(dataset, monkeypatch):
    arr, ref = dataset
    results.clear()
    seen = []
    real = ApplyMasks.prepare

    def spy(self, meta):
        seen.append(self.masks.names)
        return real(self, meta)

    monkeypatch.setattr(ApplyMasks, "prepare", spy)
    a = {"bf": MASKS["bf"]}
    arr.fs.virtual_image(a, client="inline")
    both = arr.fs.virtual_image({**a, "adf": MASKS["adf"]}, client="inline")
    assert seen == [("bf",), ("adf",)]
    np.testing.assert_allclose(both.values,
                               _reference(ref, fm.MaskStack({**a, "adf": MASKS["adf"]})),
                               rtol=2e-6)
    arr.fs.virtual_image({"x": MASKS["adf"]}, client="inline")  # same mask, new name: cached
    assert len(seen) == 2


def test_bad_masks_are_clear_errors(dataset):
    arr, _ = dataset
    with pytest.raises(MaskError, match=r"does not match detector \(17, 19\)"):
        arr.fs.virtual_image(np.ones((4, 4)), client="inline")
    with pytest.raises(MaskError):
        arr.fs.virtual_image(fm.disk(500, 500, 2), client="inline")
    bad = np.ones((17, 19))
    bad[0, 0] = np.nan
    with pytest.raises(MaskError):
        arr.fs.virtual_image(bad, client="inline")
