"""Independent numpy references for the dashboard tests."""

from __future__ import annotations

import numpy as np


def einsum(frames: np.ndarray, spec) -> np.ndarray:
    """Independent reference: every frame times the rasterised mask, summed."""
    return np.einsum("ijkl,kl->ij", frames, spec.rasterize(frames.shape[2:]).astype(np.float64))
