"""Independent numpy references for the dashboard tests."""

from __future__ import annotations

import numpy as np


def einsum(frames: np.ndarray, spec) -> np.ndarray:
    """Independent reference: every frame times the rasterised mask, summed."""
    return np.einsum("ijkl,kl->ij", frames, spec.rasterize(frames.shape[2:]).astype(np.float64))


def colour_index(values: np.ndarray, low: float, high: float, n: int) -> np.ndarray:
    """Palette index of each value under a linear colour map from ``low`` to ``high`` with
    ``n`` colours (Bokeh's LinearColorMapper: equal bins, the ends clamped)."""
    return np.clip(np.floor((values - low) / (high - low) * n), 0, n - 1).astype(int)
