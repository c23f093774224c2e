"""Centre of mass (COM) / differential phase contrast (DPC) per scan position."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from framescope.udf._backend import to_device
from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._kernels import LazyKernel, fused_view, mask_runs, share_cores

__all__ = ["CenterOfMass"]

com_sums = LazyKernel("framescope.udf._fused", "com_sums")


@dataclass(slots=True)
class _Plan:
    window: tuple[slice, slice]
    weight: np.ndarray  # (wy, wx) float32: 1 inside the COM disk, else 0
    ys: np.ndarray  # (wy,) float64 detector y relative to the centre (on the backend)
    xs: np.ndarray  # (wx,)
    # fused kernel inputs: full-frame coordinates and the disk as pixel runs
    full_ys: np.ndarray
    full_xs: np.ndarray
    runs: tuple[np.ndarray, ...]


class CenterOfMass(UDF):
    """Centre of mass of each frame relative to a reference centre, and the DPC field.

    Outputs (all per scan position, in detector pixels):

    - ``com_y``, ``com_x``: COM shift on the detector, ``sum(I * (y - cy)) / sum(I)``;
    - ``field_y``, ``field_x``: the shift in scan coordinates: detector y flipped when
      ``flip_y``, then rotated by ``rotation`` degrees (counter-clockwise);
    - ``magnitude``: length of the field vector;
    - ``divergence`` and ``curl`` of the field over the scan grid (central differences, per
      scan step). For a thin phase object the field is proportional to the phase gradient,
      so the divergence is proportional to the phase Laplacian (charge density) and the curl
      should vanish: a non-zero curl flags a wrong rotation.

    Parameters
    ----------
    cy, cx : float, optional
        Reference centre (detector pixels, pixel centres at integers); default
        ``(det_y // 2, det_x // 2)``, where an FFT-shifted zero frequency lies.
    radius : float, optional
        Only pixels within this distance of the centre count (e.g. the bright-field disk);
        default the whole frame.
    rotation : float
        Scan rotation in degrees between detector and scan axes.
    flip_y : bool
        Flip the detector y axis before rotating.
    """

    share_state = True  # the plan depends on params() and Meta only

    def __init__(self, cy: float | None = None, cx: float | None = None,
                 radius: float | None = None, rotation: float = 0.0,
                 flip_y: bool = False) -> None:
        if radius is not None and not radius > 0:
            raise ValueError(f"radius: expected a positive number, found {radius!r}")
        self.cy, self.cx, self.radius = cy, cx, radius
        self.rotation, self.flip_y = float(rotation), bool(flip_y)

    def params(self) -> dict[str, Any]:
        return {"cy": self.cy, "cx": self.cx, "radius": self.radius,
                "rotation": self.rotation, "flip_y": self.flip_y}

    def _centre(self, meta: Meta) -> tuple[float, float]:
        h, w = meta.frame_shape
        return (h // 2 if self.cy is None else self.cy, w // 2 if self.cx is None else self.cx)

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        # raw sums (I, I*dy, I*dx) merge by placement; the ratios are taken in finalize
        return {"sums": Buffer("nav", "float64", (3,), ("sum",), fill=np.nan)}

    def outputs(self, meta: Meta) -> dict[str, Buffer]:
        nav = Buffer("nav", "float32", fill=np.nan)
        return {k: nav for k in ("com_y", "com_x", "field_y", "field_x", "magnitude",
                                 "divergence", "curl")}

    def prepare(self, meta: Meta) -> _Plan:
        h, w = meta.frame_shape
        cy, cx = self._centre(meta)
        if self.radius is None:
            ys, xs = slice(0, h), slice(0, w)
        else:
            r = self.radius
            ys = slice(max(0, int(np.floor(cy - r))), min(h, int(np.ceil(cy + r)) + 1))
            xs = slice(max(0, int(np.floor(cx - r))), min(w, int(np.ceil(cx + r)) + 1))
        yy = np.arange(h, dtype=np.float64)[ys] - cy
        xx = np.arange(w, dtype=np.float64)[xs] - cx
        weight = np.ones((yy.size, xx.size), np.float32)
        if self.radius is not None:
            weight[yy[:, None] ** 2 + xx[None, :] ** 2 > self.radius**2] = 0
        if not weight.any():
            raise ValueError(f"CenterOfMass: no detector pixel within radius {self.radius} "
                             f"of ({cy}, {cx}) on a {h}x{w} detector")
        full = np.zeros((1, h, w), np.float32)
        full[0, ys, xs] = weight
        row_index, x0, x1, _ = mask_runs(full)
        share_cores()  # prepare runs in the thread that runs the tiles
        dev = functools.partial(to_device, backend=meta.backend)  # the fallback's operands
        return _Plan((ys, xs), dev(weight), dev(yy), dev(xx),
                     np.arange(h, dtype=np.float64) - cy, np.arange(w, dtype=np.float64) - cx,
                     (row_index, x0, x1))

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: _Plan) -> None:
        data = fused_view(tile.data)
        if data is not None:
            com_sums(data, state.full_ys, state.full_xs, *state.runs, results["sums"])
            return
        ys, xs = state.window
        data = tile.data[:, ys, xs].astype(np.float32) * state.weight
        rows = data.sum(axis=2, dtype=np.float64)  # (n, wy)
        cols = data.sum(axis=1, dtype=np.float64)  # (n, wx)
        out = results["sums"]
        out[:, 0] = rows.sum(axis=1)
        out[:, 1] = rows @ state.ys
        out[:, 2] = cols @ state.xs

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        sums = results["sums"].reshape(*meta.scan_shape, 3)
        with np.errstate(invalid="ignore", divide="ignore"):
            com_y = sums[..., 1] / sums[..., 0]
            com_x = sums[..., 2] / sums[..., 0]
        dy = -com_y if self.flip_y else com_y
        t = np.deg2rad(self.rotation)
        field_y = np.cos(t) * dy + np.sin(t) * com_x
        field_x = -np.sin(t) * dy + np.cos(t) * com_x
        grads = {}
        for name, f in (("y", field_y), ("x", field_x)):
            gy = np.gradient(f, axis=0) if f.shape[0] > 1 else np.zeros_like(f)
            gx = np.gradient(f, axis=1) if f.shape[1] > 1 else np.zeros_like(f)
            grads[name] = (gy, gx)
        out = {
            "com_y": com_y, "com_x": com_x, "field_y": field_y, "field_x": field_x,
            "magnitude": np.hypot(field_y, field_x),
            "divergence": grads["y"][0] + grads["x"][1],
            "curl": grads["x"][0] - grads["y"][1],
        }
        return {k: v.astype(np.float32).reshape(meta.n_positions) for k, v in out.items()}
