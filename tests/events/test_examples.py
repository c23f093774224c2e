"""The built-in workers and reducers against numpy on the simulator's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

import framescope.events as fe
import framescope.masks as fm
from framescope.corrections import Corrections
from framescope.events._simulate import simulate_streams
from framescope.events.examples import (
    ImageReducer,
    ScatterMapReducer,
    ShiftReducer,
    ShiftWorker,
    VirtualImageOverI0,
    analyse,
    phase_shift,
)
from framescope.udf import ApplyMasks

DET = (16, 16)
MASKS = {"ring": fm.ring(8, 8, 2, 6), "disk": fm.disk(8, 8, 3)}


def _streams(sim):
    return {n: (sim.endpoints[n], sim.protocols[n]) for n in sim.endpoints}


def _rasters():
    return np.stack([MASKS[k].rasterize(DET).astype("f8") for k in MASKS])


def test_analyse_runs_a_builtin_udf_with_corrections_like_numpy():
    rng = np.random.default_rng(1)
    frames = rng.poisson(20, (3, *DET)).astype("u2")
    got = analyse(ApplyMasks(MASKS), frames)["intensity"]
    np.testing.assert_allclose(got, np.einsum("nij,kij->nk", frames.astype("f8"), _rasters()),
                               rtol=1e-6)
    dark = np.full(DET, 5.0, "f4")
    got = analyse(ApplyMasks(MASKS), frames, corrections=Corrections(dark=dark))["intensity"]
    np.testing.assert_allclose(got, np.einsum("nij,kij->nk", frames - 5.0, _rasters()),
                               rtol=1e-5)


def _params(**kw):
    return {"masks": {k: m.to_dict() for k, m in MASKS.items()}, **kw}


@pytest.mark.parametrize("fpp", [1, 3])
def test_virtual_image_over_i0_on_a_grid_equals_numpy(fpp):
    scan = (4, 5)
    n = scan[0] * scan[1]
    tm = fe.TriggerMap.per_point(n, {"detector": fpp, "i0": fpp})
    with simulate_streams(n_points=n, frames_per_point=fpp, det=DET) as sim:
        streams = _streams(sim)
        del streams["motors"]  # not in the map: not received
        out = fe.run(streams, tm, VirtualImageOverI0, ImageReducer, workers=2,
                     parameters=_params(scan=list(scan)), timeout_s=30)
    frames = np.stack([sim.truth["detector"][k] for k in range(n * fpp)]).astype("f8")
    i0 = np.array([sim.truth["i0"][k] for k in range(n * fpp)])
    per_frame = np.einsum("nij,kij->nk", frames, _rasters()) / i0[:, None]
    want = per_frame.reshape(n, fpp, -1).mean(1).T.reshape(-1, *scan)
    np.testing.assert_allclose(out["image"], want, rtol=1e-6)
    assert out["done"].all()
    assert out["masks"] == list(MASKS)
    assert out["incomplete"] == 0


def test_scattered_positions_binned_into_a_map_equal_histogram2d():
    n = 60
    tm = fe.TriggerMap.per_point(n, {"detector": 1, "i0": 1, "motors": 1})
    extent, bins = [-5.0, 5.0, -5.0, 5.0], [4, 6]
    with simulate_streams(n_points=n, det=DET) as sim:
        out = fe.run(_streams(sim), tm, VirtualImageOverI0, ScatterMapReducer,
                     parameters=_params(positions="motors", extent=extent, bins=bins),
                     timeout_s=30)
    x = np.array([sim.truth["motors"][k]["x"] for k in range(n)])
    y = np.array([sim.truth["motors"][k]["y"] for k in range(n)])
    frames = np.stack([sim.truth["detector"][k] for k in range(n)]).astype("f8")
    i0 = np.array([sim.truth["i0"][k] for k in range(n)])
    ring = np.einsum("nij,ij->n", frames, _rasters()[0]) / i0
    edges = (np.linspace(-5, 5, bins[0] + 1), np.linspace(-5, 5, bins[1] + 1))
    hits, *_ = np.histogram2d(y, x, bins=edges)
    total, *_ = np.histogram2d(y, x, bins=edges, weights=ring)
    np.testing.assert_array_equal(out["hits"], hits)
    np.testing.assert_allclose(out["sum"][0], total, rtol=1e-9)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(out["map"][0], total / hits, rtol=1e-9)
    assert out["outside"] == 0


def _drifting(n: int, det=(32, 32), seed=3):
    """Frames of one random pattern, each shifted by a known (sub-pixel) drift."""
    rng = np.random.default_rng(seed)
    base = np.fft.fft2(rng.normal(size=det))
    ky, kx = np.meshgrid(np.fft.fftfreq(det[0]), np.fft.fftfreq(det[1]), indexing="ij")
    steps = rng.uniform(-1.5, 1.5, (n, 2))
    steps[0] = 0
    drift = np.cumsum(steps, 0)
    frames = [np.fft.ifft2(base * np.exp(-2j * np.pi * (ky * dy + kx * dx))).real
              for dy, dx in drift]
    return (np.stack(frames) * 100 + 1000).astype("u2"), steps


def test_phase_shift_finds_a_known_subpixel_shift():
    frames, steps = _drifting(2)
    dy, dx = phase_shift(frames[0].astype("f8"), frames[1].astype("f8"))
    np.testing.assert_allclose([dy, dx], steps[1], atol=0.1)


def test_a_stateful_worker_sees_consecutive_events_in_order_on_one_worker():
    n = 25
    frames, steps = _drifting(n)
    tm = fe.TriggerMap.per_point(n, {"detector": 1}, stateful=True)
    with simulate_streams(frames, n_points=n, det=frames.shape[1:]) as sim:
        job = fe.submit({"detector": (sim.endpoints["detector"], sim.protocols["detector"])},
                        tm, ShiftWorker, ShiftReducer, workers=2, parameters={})
        out = job.result(30)
    assert out["previous"] == [None, *range(n - 1)]  # each against the event before it
    np.testing.assert_allclose(out["shift"], steps, atol=0.1)
    np.testing.assert_allclose(out["drift"][-1], steps.sum(0), atol=0.5)
