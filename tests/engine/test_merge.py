"""Frames processed in arbitrary batches (as from a stream) give the offline result."""

from __future__ import annotations

import numpy as np
import pytest

import framescope
import framescope.masks as fm
from framescope.engine import Accumulator, Partial, run, run_frames
from framescope.engine._run import _meta
from framescope.udf import ApplyMasks, CenterOfMass, FrameStats, SumFrame


@pytest.mark.parametrize("make", [lambda: ApplyMasks({"bf": fm.disk(6, 5, 3),
                                                      "df": fm.ring(6, 5, 3, 6)}),
                                  lambda: CenterOfMass(radius=5), FrameStats])
def test_batches_in_any_order_match_the_offline_run(make):
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 500, (6, 9, 12, 11)).astype("uint16")
    arr = framescope.from_array(ref)
    offline = run(make(), arr, client="inline")

    meta = _meta(arr)
    acc = Accumulator(make(), meta)
    frames = ref.reshape(-1, 12, 11)
    order = rng.permutation(len(frames))  # out-of-order arrival
    for batch in np.array_split(order, 7):
        acc.add(run_frames(make(), frames[batch], batch, meta))
        partial = acc.publish(arr.coords)
        assert int(partial["done"].sum()) == acc.done.sum()
    live = acc.publish(arr.coords)
    assert bool(live.attrs["complete"])
    for key in offline.data_vars:
        np.testing.assert_allclose(live[key].values, offline[key].values, rtol=1e-6)


def test_run_frames_checks_its_input():
    meta = _meta(framescope.from_array(np.zeros((2, 2, 4, 4), "uint16")))
    with pytest.raises(ValueError, match="expected frames"):
        run_frames(FrameStats(), np.zeros((3, 4, 4), "uint16"), np.arange(2), meta)


def test_a_published_done_map_is_a_snapshot():
    """Later merges must not change a Dataset already handed out (a partial result)."""
    arr = framescope.from_array(np.ones((1, 4, 2, 2), "uint16"))
    acc = Accumulator(SumFrame(), _meta(arr))
    acc.add(Partial(np.array([0]), {}, {"sum": np.ones((2, 2)), "n": np.array(1)}))
    first = acc.publish(arr.coords)
    acc.add(Partial(np.array([1, 2, 3]), {}, {"sum": np.ones((2, 2)), "n": np.array(3)}))
    np.testing.assert_array_equal(first["done"].values, [[True, False, False, False]])
