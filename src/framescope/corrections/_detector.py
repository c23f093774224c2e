"""Corrections a detector states itself: DECTRIS ``pixel_mask`` and ``flatfield``.

The pixel mask is a uint32 bit field per pixel, the NXdetector convention DECTRIS follows:
bit 0 gap between modules or chips (no sensor), 1 dead, 2 under-responding, 3
over-responding, 4 noisy, 8 user-masked, 31 virtual pixel (others reserved). Any bit set
makes the pixel bad. The flat field is the factor each pixel's counts are multiplied by; an
EIGER normally applies it on board (``flatfield_correction_applied``), so it is used only
when the file or header says it was not applied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from framescope.corrections._model import Corrections

__all__ = ["PIXEL_MASK_BITS", "from_detector"]

log = logging.getLogger(__name__)

#: what each documented bit of a DECTRIS / NXdetector pixel mask says
PIXEL_MASK_BITS = {0: "gap", 1: "dead", 2: "under-responding", 3: "over-responding",
                   4: "noisy", 8: "user-masked", 31: "virtual pixel"}


def _false(value: Any) -> bool:
    return value is not None and not bool(value) and not (
        isinstance(value, str) and value.strip().lower() in ("true", "1", "yes"))


def from_detector(arrays: Mapping[str, np.ndarray], flags: Mapping[str, Any] | None = None,
                  where: str = "detector") -> Corrections | None:
    """The corrections a detector's ``pixel_mask`` / ``flatfield`` call for, or None.

    Parameters
    ----------
    arrays : mapping
        ``pixel_mask`` (uint32 bits, any set = bad) and/or ``flatfield`` (multiplicative).
    flags : mapping, optional
        Header or file fields: the flat field is applied only when
        ``flatfield_correction_applied`` is given and false.
    where : str
        Names the file or stream in the log.
    """
    flags = flags or {}
    mask = arrays.get("pixel_mask")
    bad = None
    if mask is not None:
        m = np.asarray(mask)
        if m.ndim == 2 and m.any():
            bad = m != 0
            counts = {name: int(((m >> bit) & 1).sum()) for bit, name in PIXEL_MASK_BITS.items()
                      if ((m >> bit) & 1).any()}
            log.info("%s: pixel_mask marks %d bad pixels %s", where, int(bad.sum()), counts)
            if bad.all():
                log.warning("%s: pixel_mask marks every pixel; not applied", where)
                bad = None
    gain = None
    flat = arrays.get("flatfield")
    if flat is not None and _false(flags.get("flatfield_correction_applied")):
        g = np.asarray(flat, dtype=np.float32)
        if g.ndim == 2 and (bad is None or g.shape == bad.shape):
            unusable = ~(np.isfinite(g) & (g > 0))
            if unusable.any():  # such pixels are bad, not infinitely bright
                bad = unusable if bad is None else bad | unusable
                g = np.where(unusable, 1.0, g).astype(np.float32)
            gain = g
    if bad is None and gain is None:
        return None
    return Corrections(gain=gain, bad=bad)
