from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from framescope.errors import MaskError
from framescope.masks import (
    SPARSE_THRESHOLD,
    ArrayMask,
    MaskStack,
    Window,
    array,
    box,
    disk,
    point,
    polygon,
    ring,
)

DET = (48, 40)


@pytest.fixture
def stack():
    return MaskStack({
        "bf": disk(24, 20, 6),
        "adf": ring(24.5, 19.5, 10, 16),
        "roi": box(2, 3, 9, 12),
        "tri": polygon([(30.2, 2.1), (46.5, 2.4), (40.3, 15.7)]),
        "px": point(5, 38),
    })


def test_mapping_behaviour(stack):
    assert stack.names == ("bf", "adf", "roi", "tri", "px")
    assert len(stack) == 5
    assert list(stack) == list(stack.names)
    assert stack["roi"] == box(2, 3, 9, 12)
    assert "adf" in stack
    with pytest.raises(KeyError, match=r"no mask 'nope'; masks: \['bf', 'adf'"):
        stack["nope"]
    auto = MaskStack([disk(1, 1, 1), point(2, 2)])
    assert auto.names == ("m0", "m1")


def test_from_any():
    d = disk(4, 4, 2)
    assert MaskStack.from_any(d).names == ("m0",)
    stack = MaskStack.from_any({"a": d, "b": np.ones((8, 8))})
    assert isinstance(stack["b"], ArrayMask)
    assert MaskStack.from_any(stack) is stack
    assert MaskStack.from_any([d, np.eye(8)]).names == ("m0", "m1")
    cube = np.random.default_rng(0).random((3, 8, 8))
    from3d = MaskStack.from_any(cube)
    assert from3d.names == ("m0", "m1", "m2")
    np.testing.assert_array_equal(from3d.dense((8, 8)), cube.reshape(3, 64).T.astype("f4"))
    assert MaskStack.from_any(np.eye(8)).names == ("m0",)
    with pytest.raises(MaskError, match=r"2D mask or a 3D stack .* found shape \(1, 2, 8, 8\)"):
        MaskStack.from_any(np.ones((1, 2, 8, 8)))
    with pytest.raises(TypeError, match="found str"):
        MaskStack.from_any("disk")
    with pytest.raises(TypeError, match=r"mask 1: expected a mask spec or a 2D numpy array"):
        MaskStack.from_any([d, 3])


def test_construction_errors():
    with pytest.raises(MaskError, match="needs at least one mask, found none"):
        MaskStack([])
    with pytest.raises(MaskError, match=r"non-empty strings, found 3"):
        MaskStack({3: disk(1, 1, 1)})
    with pytest.raises(TypeError, match=r"mask 'a': expected a mask spec, found ndarray"):
        MaskStack({"a": np.ones((2, 2))})
    with pytest.raises(TypeError, match=r"use MaskStack\.from_any"):
        MaskStack(disk(1, 1, 1))


def test_subset_and_add_make_new_stacks(stack):
    sub = stack.subset(["tri", "bf"])
    assert sub.names == ("tri", "bf")
    assert stack.subset("bf").names == ("bf",)
    with pytest.raises(MaskError, match=r"unknown mask names \['x'\]; masks: \['bf'"):
        stack.subset(["bf", "x"])
    more = stack.add("extra", disk(10, 10, 3))
    assert more.names[-1] == "extra"
    assert len(stack) == 5  # unchanged
    assert isinstance(stack.add("arr", np.ones(DET))["arr"], ArrayMask)
    with pytest.raises(MaskError, match=r"mask 'bf' already exists"):
        stack.add("bf", disk(1, 1, 1))


def test_key_depends_on_names_order_and_specs(stack):
    assert stack.key == MaskStack(dict(stack.items())).key
    assert stack.subset(["bf", "adf"]).key != stack.subset(["adf", "bf"]).key
    assert MaskStack({"a": disk(1, 1, 1)}).key != MaskStack({"b": disk(1, 1, 1)}).key
    assert MaskStack({"a": disk(1, 1, 1)}).key != MaskStack({"a": disk(1, 1, 2)}).key
    assert stack == MaskStack(dict(stack.items()))
    assert hash(stack) == hash(MaskStack(dict(stack.items())))


def test_key_identical_in_another_process(stack):
    code = (
        "import sys; from framescope.masks import MaskStack;"
        "print(MaskStack.from_json(sys.stdin.read()).key)"
    )
    out = subprocess.run([sys.executable, "-c", code], input=stack.to_json(), text=True,
                         capture_output=True, check=True, timeout=60,
                         env={**os.environ, "PYTHONHASHSEED": "4321"})
    assert out.stdout.strip() == stack.key


def test_json_round_trip(stack):
    full = stack.add("arr", np.random.default_rng(1).random(DET))
    again = MaskStack.from_json(full.to_json(indent=1))
    assert again.names == full.names
    assert again.key == full.key
    assert [again[n].key for n in again] == [full[n].key for n in full]
    np.testing.assert_array_equal(again.dense(DET), full.dense(DET))


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", r"does not parse"),
     ('{"masks": []}', r"expected a JSON object with format 'framescope.maskstack'"),
     ('{"format": "framescope.maskstack", "version": 1, "masks": [{"kind": "disk"}]}',
      r"masks\[0\]: expected a unique 'name' string, found None"),
     ('{"format": "framescope.maskstack", "version": 1, "masks": '
      '[{"name": "a", "kind": "disk", "params": {"cy": 1, "cx": 1, "r": -1}}]}',
      r"disk: r must be >= 0")],
)
def test_from_json_errors(text, message):
    with pytest.raises(MaskError, match=message):
        MaskStack.from_json(text)


def test_dense_layout_and_values(stack):
    m = stack.dense(DET)
    assert m.shape == (DET[0] * DET[1], 5)
    assert m.dtype == np.float32
    assert m.flags.f_contiguous
    assert not m.flags.writeable
    for j, name in enumerate(stack):
        np.testing.assert_array_equal(m[:, j], stack[name].rasterize(DET).ravel())
    assert stack.dense(DET) is m  # cached by (key, shape)
    assert MaskStack(dict(stack.items())).dense(DET) is m  # by content, not identity


def test_sparse_layout(stack):
    s = stack.sparse(DET)
    assert isinstance(s, sp.csr_matrix)
    assert s.shape == (5, DET[0] * DET[1])
    assert s.dtype == np.float32
    assert s.nnz == np.count_nonzero(stack.dense(DET))
    np.testing.assert_array_equal(s.toarray(), stack.dense(DET).T)


def test_sparse_and_dense_products_agree(stack):
    weights = np.random.default_rng(2).normal(size=DET)
    full = stack.add("w", array(weights))
    tile = np.random.default_rng(3).random((7, DET[0] * DET[1]), dtype=np.float32)
    dense = tile @ full.dense(DET)
    s = full.sparse(DET)
    per_frame = np.stack([s @ frame for frame in tile])
    transposed = (s @ tile.T).T
    # float64 reference from the rasters, written without the matrices
    ref = np.stack([
        np.einsum("np,p->n", tile.astype(np.float64), full[n].rasterize(DET).ravel())
        for n in full
    ], axis=1)
    for got in (dense, per_frame, transposed):
        assert got.shape == (7, 6)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


def test_fill_fraction_and_prefer_sparse():
    small = MaskStack([disk(24, 20, 3)])
    nnz = np.count_nonzero(disk(24, 20, 3).rasterize(DET))
    assert small.fill_fraction(DET) == pytest.approx(nnz / (DET[0] * DET[1]))
    assert small.prefer_sparse(DET)
    big = MaskStack([box(0, 0, 30, 40), ring(24, 20, 2, 15)])
    assert big.fill_fraction(DET) > SPARSE_THRESHOLD
    assert not big.prefer_sparse(DET)
    assert big.prefer_sparse(DET, threshold=0.99)


def test_bounding_box(stack):
    covered = np.any(stack.dense(DET) != 0, axis=1).reshape(DET)
    rows, cols = np.nonzero(covered)
    win = stack.bounding_box(DET)
    assert win == (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    assert covered[win.slices].sum() == covered.sum()
    assert MaskStack([disk(10, 20, 2)]).bounding_box((64, 64)) == Window(8, 13, 18, 23)
    # clipped at the detector edge
    assert MaskStack([disk(0, 39, 3)]).bounding_box(DET) == Window(0, 4, 36, 40)


def test_errors_name_the_mask(stack):
    bad = stack.add("far", disk(1000, 1000, 5))
    with pytest.raises(MaskError, match=r"mask 'far': Disk\(.*\) is empty on detector \(48, 40\)"):
        bad.dense(DET)
    with pytest.raises(MaskError, match=r"mask 'far': .* is empty"):
        bad.sparse(DET)
    wrong = MaskStack.from_any({"user": np.ones((10, 10))})
    with pytest.raises(
        MaskError, match=r"mask 'user': mask shape \(10, 10\) does not match detector \(256, 256\)"
    ):
        wrong.dense((256, 256))
    with pytest.raises(MaskError, match=r"detector shape must be two positive integers"):
        stack.bounding_box((-1, 4))


def test_pickles_small(stack):
    stack.dense((512, 512))
    stack.sparse((512, 512))
    data = pickle.dumps(stack)
    assert len(data) < 2000
    again = pickle.loads(data)
    assert again == stack
    assert again.names == stack.names
    arr_stack = MaskStack.from_any(np.ones((2, 16, 16)))
    restored = pickle.loads(pickle.dumps(arr_stack))
    assert restored.key == arr_stack.key
    assert not restored["m0"].values.flags.writeable


def test_repr(stack):
    assert repr(stack).startswith("MaskStack({'bf': Disk(cy=24.0, cx=20.0, r=6.0), 'adf':")
