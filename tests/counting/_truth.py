"""Counted events against the simulation's true electrons (shared by the counting tests)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def match(truth: np.ndarray, found: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """One-to-one matching (Hungarian) of found events to true positions within ``radius``
    px; returns a bool per true electron."""
    hit = np.zeros(len(truth), dtype=bool)
    if len(truth) and len(found):
        d = np.hypot(*(truth[:, None, :] - found[None, :, :]).transpose(2, 0, 1))
        cost = np.where(d <= radius, d, 1e6)
        rows, cols = linear_sum_assignment(cost)
        hit[rows[cost[rows, cols] <= radius]] = True
    return hit


def recall_precision(ds, counted) -> tuple[float, float]:
    """Recall and precision of the event pixels of ``counted`` against ``ds``'s true
    positions."""
    w = ds.frame_shape[1]
    hits = []
    for i in range(counted.n_frames):
        truth = ds.positions[ds.offsets[i]:ds.offsets[i + 1]]
        ev = counted.events(i).astype(np.int64)
        hits.append(match(truth, np.stack([ev // w, ev % w], axis=1).astype(float)))
    hit = np.concatenate(hits)
    return hit.mean(), hit.sum() / counted.n_events
