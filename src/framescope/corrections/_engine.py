"""What the engine needs of corrections: the UDF-facing Meta, the corrected detector
coordinates and calibration, and the per-process plan cache."""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from framescope.corrections._apply import CorrectionPlan, plan
from framescope.corrections._model import Corrections, CorrectionsError

__all__ = ["ENCODING_KEY", "corrected_calibration", "corrected_coords", "corrected_meta",
           "plan_for", "with_corrections"]

#: where an array keeps the corrections every later analysis of it applies
ENCODING_KEY = "framescope_corrections"

_PLANS: OrderedDict[tuple[str, tuple[int, int], str], CorrectionPlan] = OrderedDict()
_LOCK = threading.Lock()


def with_corrections(arr: xr.DataArray, corrections: Corrections | None) -> xr.DataArray:
    """``arr`` (same data) with ``corrections`` attached (None detaches them)."""
    out = arr.copy(deep=False)
    out.encoding = dict(arr.encoding)
    if corrections is None:
        out.encoding.pop(ENCODING_KEY, None)
    else:
        if not isinstance(corrections, Corrections):
            raise TypeError(f"corrections: expected a framescope.corrections.Corrections, "
                            f"found {type(corrections).__name__}")
        corrections.check(tuple(arr.shape[2:]))
        out.encoding[ENCODING_KEY] = corrections
    return out


def corrected_calibration(cal: Any, c: Corrections, raw: tuple[int, int]) -> Any:
    """The calibration of corrected frames: the centre moved by the crop and scaled by the
    binning and the FFT downsampling, the pixel (or its angle) as many times larger.

    Raises
    ------
    CorrectionsError
        FFT downsampling to a shape that scales y and x differently, on a calibration with
        an angle or size per pixel (one number: square pixels).
    """
    if cal is None or not c.regrids:
        return cal
    cy, cx = cal.centre(raw)
    y0, _, x0, _ = c.crop or (0, 0, 0, 0)
    k = c.bin
    # raw pixel i lies in output pixel i // k, whose centre is raw (i//k)*k + (k-1)/2
    cy, cx = (cy - y0 - (k - 1) / 2) / k, (cx - x0 - (k - 1) / 2) / k
    scale = float(k)
    if c.fft_downsample is not None:
        # binned pixel t lies at output pixel t * h_out / h (fft_grid)
        h, w = raw if c.crop is None else (c.crop[1] - c.crop[0], c.crop[3] - c.crop[2])
        h, w = h // k, w // k
        ho, wo = c.output_shape(raw)
        sy, sx = h / ho, w / wo
        cy, cx = cy / sy, cx / sx
        per_px = cal.angle_per_px is not None or cal.pixel_size is not None
        if per_px and abs(sy - sx) > 1e-9 * max(sy, sx):
            raise CorrectionsError(
                f"fft_downsample: {h}x{w} -> {ho}x{wo} scales y by {sy:.6g} and x by "
                f"{sx:.6g}; a calibration with one angle (or size) per pixel needs the same "
                f"scale on both axes")
        scale *= sy
    fields: dict[str, Any] = {"center": (cy, cx)}
    if scale != 1:
        if cal.angle_per_px is not None:
            fields["angle_per_px"] = cal.angle_per_px * scale
        elif cal.pixel_size is not None:
            fields["pixel_size"] = cal.pixel_size * scale
    return cal.updated("corrections", **fields)


def corrected_meta(meta: Any, corrections: Corrections | None) -> Any:
    """The Meta UDFs see: corrected frames' shape, float32, the calibration of the
    corrected frames, and the raw frames' shape and dtype for reading."""
    if corrections is None:
        return meta
    raw = tuple(meta.frame_shape)
    return dataclasses.replace(
        meta, frame_shape=corrections.output_shape(raw), dtype=np.dtype(np.float32),
        calibration=corrected_calibration(meta.calibration, corrections, raw),
        corrections=corrections, raw=(raw, np.dtype(meta.dtype)))


def corrected_coords(coords: Mapping[str, Any], corrections: Corrections | None,
                     ) -> Mapping[str, Any]:
    """``coords`` with the detector axes (and ``k_y``/``k_x``) of the corrected frames:
    cropped, averaged over each bin (pixel positions stay raw pixel positions), sampled
    where FFT downsampling puts its pixels."""
    if corrections is None or not corrections.regrids:
        return coords
    out = dict(coords.items())
    for ydim, xdim in (("det_y", "det_x"), ("k_y", "k_x")):
        if ydim not in out or xdim not in out:
            continue
        y, x = (xr.Variable(("det_y",) if d.endswith("y") else ("det_x",),
                            *_values(out[d])) for d in (ydim, xdim))
        cy, cx = corrections.det_coords(y.values, x.values)
        out[ydim] = xr.Variable("det_y", cy, y.attrs)
        out[xdim] = xr.Variable("det_x", cx, x.attrs)
    return out


def _values(c: Any) -> tuple[np.ndarray, dict[str, Any]]:
    if isinstance(c, tuple):  # (dim, values, attrs) of Calibration.coords
        return np.asarray(c[1]), dict(c[2]) if len(c) > 2 else {}
    return np.asarray(getattr(c, "values", c)), dict(getattr(c, "attrs", {}))


def plan_for(corrections: Corrections, raw: tuple[int, int], backend: str) -> CorrectionPlan:
    """The plan of ``corrections`` for raw frames of ``raw`` on ``backend``, built once per
    process (neighbour lists, device copies of the arrays)."""
    key = (corrections.key, tuple(raw), backend)
    with _LOCK:
        got = _PLANS.get(key)
        if got is not None:
            _PLANS.move_to_end(key)
            return got
    got = plan(corrections, raw, backend)
    with _LOCK:
        _PLANS[key] = got
        while len(_PLANS) > 8:
            _PLANS.popitem(last=False)
    return got
