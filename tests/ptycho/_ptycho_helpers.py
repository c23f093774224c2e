"""Shared by the ptychography tests: the synthetic problem and the quality measure."""

from __future__ import annotations

import numpy as np
import xarray as xr

from framescope.datasets import synthetic
from framescope.datasets._synthetic import SyntheticReader

SCAN, DET = (16, 16), (32, 32)
PARAMS = {"scan": SCAN, "det": DET, "semiconv": 5, "defocus": 4.0, "step": 3, "dose": 1e6,
          "atom_phase": 0.2, "smooth_phase": 0.3, "seed": 3}


def problem(**changes) -> tuple[xr.DataArray, SyntheticReader, float]:
    """Frames (calibrated), the reader (ground truth) and the probe defocus in m."""
    params = {**PARAMS, **changes}
    dtype = params.pop("dtype", "uint16")
    arr = synthetic(**params, calibrated=True, dtype=dtype)
    reader = SyntheticReader(**params)
    cal = arr.fs.calibration
    defocus_m = params["defocus"] * cal.wavelength / (np.pi * cal.semiconv**2)
    return arr, reader, defocus_m


def illuminated(ds: xr.Dataset, fraction: float = 0.5) -> np.ndarray:
    """Object pixels whose summed probe intensity over the measured positions is at least
    ``fraction`` of the maximum."""
    py = float(ds.y[1] - ds.y[0])
    px = float(ds.x[1] - ds.x[0])
    probe = ds["probe_amplitude"].values ** 2
    h, w = probe.shape
    total = np.zeros(ds["object_phase"].shape)
    measured = ds["measured"].values.ravel()
    cy = np.rint((ds["position_y"].values.ravel() - float(ds.y[0])) / py).astype(int)
    cx = np.rint((ds["position_x"].values.ravel() - float(ds.x[0])) / px).astype(int)
    for y, x in zip(cy[measured], cx[measured], strict=True):
        total[y - h // 2:y - h // 2 + h, x - w // 2:x - w // 2 + w] += probe
    return total >= fraction * total.max()


def phase_r(phase: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """Pearson r of two phases over ``region`` after removing from each its best plane
    (global offset and linear ramp); the global phase is first taken out of ``phase``
    so a wrap at +-pi does not cut the region."""
    offset = np.angle(np.mean(np.exp(1j * (phase - truth))[region]))
    phase = np.angle(np.exp(1j * (phase - offset)))
    yy, xx = np.nonzero(region)
    design = np.c_[np.ones(yy.size), yy, xx]

    def flat(a: np.ndarray) -> np.ndarray:
        v = a[region]
        return v - design @ np.linalg.lstsq(design, v, rcond=None)[0]

    return float(np.corrcoef(flat(phase), flat(truth))[0, 1])
