"""The SSB peer wrapper (benchmarks/_ptycho40.py) on the synthetic object: its phase has
the object's sign, and the calibration's rotation and flip reach ptychography40 the right
way round (the wrong handedness anti-correlates). Skipped without ptychography40."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from framescope.datasets import synthetic

pytest.importorskip("ptychography40")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from _ptycho40 import ssb_ptychography40

DET = 64
SEMICONV = DET / 6


@pytest.mark.parametrize(("rotation", "flip"), [(0.0, False), (1.2, True)])
def test_ptychography40_phase_follows_the_object(rotation, flip, band_limited_truth):
    params = {"scan": (24, 24), "det": (DET, DET), "dose": 1e6, "semiconv": SEMICONV,
              "atom_phase": 0.1, "smooth_phase": 0.0, "seed": 0, "rotation": rotation,
              "flip": flip}
    arr = synthetic(**params, calibrated=True)
    frames = np.asarray(arr)
    truth = band_limited_truth(**params)[3:-3, 3:-3]  # SSB wraps the scan: edges ring
    phase = np.angle(ssb_ptychography40(frames, arr.fs.calibration))[3:-3, 3:-3]
    assert np.corrcoef(truth.ravel(), phase.ravel())[0, 1] > 0.9
    if rotation:
        wrong = arr.fs.calibrate(rotation=-rotation)
        phase = np.angle(ssb_ptychography40(frames, wrong.fs.calibration))[3:-3, 3:-3]
        assert np.corrcoef(truth.ravel(), phase.ravel())[0, 1] < 0
