"""Estimating the detector response (``estimate_response``) from simulated low-dose frames,
and counting with it by fitting (``count_electrons(method="fit")``)."""

from __future__ import annotations

import numpy as np
import pytest
from _truth import recall_precision

from framescope.counting import (
    CountingError,
    Response,
    count_electrons,
    estimate_response,
)
from framescope.datasets import lowdose


def _estimate(dose: float, seed: int, scan: int = 8, **params) -> Response:
    ds = lowdose(scan=(scan, scan), det=(64, 64), dose=dose, seed=seed, **params)
    return estimate_response(ds.frames, dark=ds.dark_frames(64).mean(axis=0))


@pytest.mark.parametrize("dose", [0.01, 0.05])
def test_recovers_the_simulated_response(dose):
    r = _estimate(dose, seed=0)
    assert abs(r.electron / 160.0 - 1) < 0.03, r
    assert abs(r.blur - 0.7) < 0.05, r
    assert r.n_events >= 100
    assert 0 < r.isolated_fraction < 1


def test_recovers_another_response():
    r = _estimate(0.03, seed=1, gain=90.0, blur=0.5)
    assert abs(r.electron / 90.0 - 1) < 0.03, r
    assert abs(r.blur - 0.5) < 0.05, r


def test_dataarray_and_xrays():
    """A DataArray gives the numpy result; X-rays (30 electrons) are left out by charge, or
    with their surroundings by an X-ray threshold."""
    ds = lowdose(scan=(6, 6), det=(64, 64), dose=0.02, seed=2, xray_rate=0.5)
    dark = ds.dark_frames(64).mean(axis=0)
    r = estimate_response(ds.frames, dark=dark)
    assert estimate_response(ds.to_dataarray(), dark=dark) == r
    assert abs(r.electron / 160.0 - 1) < 0.03, r
    with_xray = estimate_response(ds.frames, dark=dark, xray_threshold=400.0)
    assert with_xray.n_events <= r.n_events
    assert abs(with_xray.electron / 160.0 - 1) < 0.03, with_xray


def test_fit_counting_with_estimated_response():
    """The response measured at 0.02 e-/px counts a 0.1 e-/px dataset of the same detector
    nearly as well as the true one."""
    r = _estimate(0.02, seed=11, scan=6)
    ds = lowdose(scan=(4, 4), det=(64, 64), dose=0.1, seed=5)
    counted = count_electrons(ds.frames, dark=ds.dark_frames(64).mean(axis=0), method="fit",
                              electron=r.electron, blur=r.blur)
    recall, precision = recall_precision(ds, counted)
    assert recall >= 0.97, recall
    assert precision >= 0.97, precision


def test_too_few_isolated_events():
    ds = lowdose(scan=(2, 2), det=(64, 64), dose=0.3, seed=3)
    with pytest.raises(CountingError, match=r"isolated .* dose is too high.*<= ~0.05"):
        estimate_response(ds.frames, dark=ds.dark_frames(16).mean(axis=0))
    ds = lowdose(scan=(2, 2), det=(64, 64), dose=0.001, seed=3)
    with pytest.raises(CountingError, match=r"found \d+ isolated.* too low"):
        estimate_response(ds.frames, dark=ds.dark_frames(16).mean(axis=0))


def test_bad_input():
    ds = lowdose(scan=(2, 2), det=(32, 40), dose=0.02, seed=4)
    with pytest.raises(CountingError, match=r"estimate_response: dark .*\(32, 40\), found "
                                            r"\(40, 32\)"):
        estimate_response(ds.frames, dark=np.zeros((40, 32)))
    with pytest.raises(CountingError, match="n_frames"):
        estimate_response(ds.frames, n_frames=0)
