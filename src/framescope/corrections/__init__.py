"""Detector corrections: dark, gain (flat field), bad pixels, offset, threshold, crop,
binning and FFT downsampling, as one :class:`Corrections` value applied inside the tile loop
of every run (files and streams), and :func:`from_dark` to build it from dark frames.

Examples
--------
>>> import numpy as np
>>> c = Corrections(dark=np.zeros((8, 8)), bin=2)
>>> c.output_shape((8, 8))
(4, 4)
"""

from framescope.corrections._apply import CorrectionPlan, plan
from framescope.corrections._dark import DarkStats, from_dark
from framescope.corrections._detector import PIXEL_MASK_BITS, from_detector
from framescope.corrections._engine import (
    ENCODING_KEY,
    corrected_calibration,
    corrected_coords,
    corrected_meta,
    plan_for,
    with_corrections,
)
from framescope.corrections._fft import fft_downsample
from framescope.corrections._fold import fold_masks
from framescope.corrections._model import Corrections, CorrectionsError

__all__ = [
    "ENCODING_KEY",
    "PIXEL_MASK_BITS",
    "CorrectionPlan",
    "Corrections",
    "CorrectionsError",
    "DarkStats",
    "corrected_calibration",
    "corrected_coords",
    "corrected_meta",
    "fft_downsample",
    "fold_masks",
    "from_dark",
    "from_detector",
    "plan",
    "plan_for",
    "with_corrections",
]
