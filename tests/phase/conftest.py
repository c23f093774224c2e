"""The reference phase the SSB tests compare with, computed from the simulation alone."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from framescope.datasets import SyntheticReader


def _band_limited_truth(**params) -> np.ndarray:
    """The object's phase with frequencies ``|k| >= 2 alpha`` removed (SSB transfers
    nothing beyond twice the aperture: ``2 * semiconv / det`` cycles per object px), under
    each probe centre (rounded: with a scan rotation the centres fall on object pixels only
    to about a pixel). ``params`` are :class:`SyntheticReader`'s."""
    reader = SyntheticReader(**params)
    phase = reader.phase
    ny, nx = phase.shape
    k = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.fftfreq(nx)[None, :])
    cutoff = 2 * params["semiconv"] / params["det"][1]
    band = np.fft.ifft2(np.fft.fft2(phase) * (k < cutoff)).real
    cy, cx = reader.probe_centres()
    return band[np.rint(cy).astype(int) % ny, np.rint(cx).astype(int) % nx]


@pytest.fixture
def band_limited_truth() -> Callable[..., np.ndarray]:
    return _band_limited_truth
