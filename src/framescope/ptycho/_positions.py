"""Measured scan positions (an array, a file, a values stream) and position refinement.

Measured positions are probe displacements ``(y, x)`` in m along the *scan* (motor) axes,
one per frame in the frames' row-major order; the calibration's rotation and flip take
them onto the object axes as they do grid positions (:func:`~framescope.ptycho.
scan_matrix`).

Refinement (:class:`PositionRefiner`) is the gradient method: at each position the change
of the exit wave that the measured modulus asks for, ``dpsi``, is fitted in the least-squares
sense by a shift of the object under the probe, ``dpsi ~ P (dy dO/dy + dx dO/dx)``
(a first-order Taylor step; Dwivedi et al. 2018, Ultramicroscopy 192, 29; the same
update as Odstrcil et al. 2018, Opt. Express 26, 3108). Each sweep moves every position
by at most ``max_step`` px; the mean move is taken out (a common shift is the object's,
not the scan's).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from framescope.ptycho._setup import scan_matrix, window_corners
from framescope.ptycho._solver import RPIE, fft_module, shift_ramp
from framescope.udf._backend import to_host

__all__ = ["PositionRefiner", "load_positions", "measured_corners", "positions_from_stream",
           "set_positions"]

_MAX_RANGE_M = 0.01  # positions spanning more than 1 cm are not in m (µm or nm numbers)


def load_positions(spec: Any, n: int) -> np.ndarray:
    """Measured positions as an ``(n, 2)`` float64 array of ``(y, x)`` in m.

    Parameters
    ----------
    spec : array-like, str or path
        An ``(n, 2)`` array in m; a ``.npy`` file; or an HDF5 dataset named
        ``"file.h5::/entry/positions"`` (its ``units`` attribute, if any, is honoured:
        ``"um"``, ``"nm"``, ``"m"``, ...).
    n : int
        Frames of the scan (scan_y * scan_x).

    Raises
    ------
    ValueError
        Wrong shape, count, non-finite values, or a range that cannot be metres.
    FileNotFoundError
        A file that is not there.
    """
    where = "positions"
    if isinstance(spec, str | Path):
        spec, where, factor = _read(str(spec))
        pos = np.asarray(spec, np.float64) * factor
    else:
        pos = np.asarray(spec, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"{where}: expected an (n, 2) array of (y, x) in m, found shape "
                         f"{pos.shape}")
    if pos.shape[0] != n:
        raise ValueError(f"{where}: expected one position per frame ({n} frames), found "
                         f"{pos.shape[0]}")
    if not np.isfinite(pos).all():
        raise ValueError(f"{where}: expected finite values, found "
                         f"{int((~np.isfinite(pos)).sum())} NaN/inf")
    span = float((pos.max(axis=0) - pos.min(axis=0)).max())
    if span > _MAX_RANGE_M:
        raise ValueError(f"{where}: expected metres, found a range of {span:.4g}: give "
                         f"them in m (µm * 1e-6), or an HDF5 dataset with a 'units' attribute")
    return pos


def _read(spec: str) -> tuple[np.ndarray, str, float]:
    """(array, name for errors, factor to m) of a ``.npy`` path or ``file.h5::/dataset``."""
    path, _, dataset = spec.partition("::")
    if not Path(path).exists():
        raise FileNotFoundError(f"positions: no file {path!r}")
    if not dataset:
        if path.endswith(".npy"):
            return np.load(path, allow_pickle=False), path, 1.0
        raise ValueError(f"positions {spec!r}: expected a .npy file or 'file.h5::/dataset'")
    import h5py

    with h5py.File(path, "r") as f:
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            raise ValueError(f"positions: {path} has no dataset {dataset!r}")
        data = f[dataset][()]
        units = f[dataset].attrs.get("units")
    factor = 1.0
    if units is not None:
        from framescope.calibration import parse_quantity

        text = units.decode() if isinstance(units, bytes) else str(units)
        factor = parse_quantity(f"1 {text}", "length", f"{path}::{dataset} units")
    return data, f"{path}::{dataset}", factor


def measured_corners(positions: np.ndarray, pixel: tuple[float, float], *,
                     rotation: float = 0.0, flip: bool = False,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Window corners (object px) and displacements (m, object axes, from the first
    position) of measured scan-axis positions ``(n, 2)`` in m: like
    :func:`~framescope.ptycho.scan_positions` for a grid."""
    rel = np.asarray(positions, np.float64) - positions[0]
    moved = rel @ scan_matrix(rotation, flip).T
    return window_corners(moved, pixel), moved


def positions_from_stream(endpoint: str, n: int, *, protocol: str = "values-cbor",
                          fields: tuple[str, str] = ("y", "x"), unit: str | None = None,
                          timeout: float = 30.0) -> np.ndarray:
    """Collect ``n`` positions from a values stream (``{"x", "y"}`` per frame).

    Connects (PULL) to ``endpoint`` and keeps frame ``k``'s ``fields`` as row ``k`` until
    all ``n`` came, the series ended, or ``timeout`` s passed.

    Parameters
    ----------
    endpoint : str
        ``tcp://127.0.0.1:9999``: the sender binds, this side connects.
    n : int
        Positions expected (the scan's frames).
    protocol : {"values-cbor", "values-json"}
    fields : (str, str)
        Names of the y and x values.
    unit : str, optional
        Length unit of the values (``"um"``); default the unit the series start declares
        for the fields.

    Returns
    -------
    ndarray, shape (n, 2)
        ``(y, x)`` in m, ready for ``reconstruct(positions=...)``.

    Raises
    ------
    TimeoutError
        Fewer than ``n`` positions within ``timeout`` (the missing frame numbers named).
    ValueError
        No unit known, a field missing, or a series that ended early.
    """
    from framescope.live import StreamReceiver

    sink = _Collect(n, fields)
    receiver = StreamReceiver("positions", endpoint, protocol, sink).start()
    try:
        sink.done.wait(timeout)
    finally:
        receiver.stop()
    if sink.error:
        raise ValueError(f"positions stream {endpoint}: {sink.error}")
    missing = np.flatnonzero(np.isnan(sink.pos[:, 0]))
    if missing.size:
        what = "the series ended" if sink.ended else f"after {timeout:g} s"
        raise TimeoutError(f"positions stream {endpoint}: {n - missing.size} of {n} "
                           f"positions, {what}; missing frames {missing[:8].tolist()}"
                           f"{' ...' if missing.size > 8 else ''}")
    unit = unit or sink.unit
    if not unit:
        raise ValueError(f"positions stream {endpoint}: fields {list(fields)} declare no "
                         f"unit; pass unit='um' (or the stream's length unit)")
    from framescope.calibration import parse_quantity

    return sink.pos * parse_quantity(f"1 {unit}", "length", "positions unit")


class _Collect:
    """Sink of :func:`positions_from_stream` (called from the receiver's thread)."""

    def __init__(self, n: int, fields: tuple[str, str]) -> None:
        self.pos = np.full((n, 2), np.nan)
        self.fields, self.left = fields, n
        self.done = threading.Event()
        self.unit, self.error, self.ended = "", "", False

    def on_start(self, stream: str, start: Any) -> None:
        declared = start.header.get("fields", {})
        units = {declared.get(f, {}).get("unit", "") for f in self.fields}
        self.unit = units.pop() if len(units) == 1 else ""

    def on_frame(self, stream: str, index: int, payload: Any, nbytes: int) -> None:
        if not 0 <= index < len(self.pos):
            return  # beyond the scan: not ours
        try:
            self.pos[index] = [float(payload[f]) for f in self.fields]
        except KeyError as exc:
            self.error = (f"frame {index}: expected values {list(self.fields)}, found "
                          f"{sorted(payload)} (missing {exc})")
            self.done.set()
            return
        self.left -= 1
        if self.left <= 0:
            self.done.set()

    def on_end(self, stream: str, end: Any) -> None:
        self.ended = True
        self.done.set()


def set_positions(solver: RPIE, corners: np.ndarray) -> None:
    """Replace the solver's positions (window corners, object px) between sweeps."""
    pos = np.asarray(corners, np.float64)
    if not solver.subpixel:
        pos = np.round(pos)
    top = np.floor(pos + 1e-9).astype(np.int64)
    solver.top = top
    solver.frac = np.where(np.abs(pos - top) < 1e-9, 0.0, pos - top)


def solver_corners(solver: RPIE) -> np.ndarray:
    """The solver's window corners (object px)."""
    return solver.top + solver.frac


class PositionRefiner:
    """Refine the solver's positions between sweeps by the gradient method.

    Parameters
    ----------
    start : int
        First sweep (0-based, counted before it runs) after which positions move.
    max_step : float
        Largest move of one position per sweep, object px (per axis).
    gain : float
        Fraction of the least-squares shift taken per sweep.
    """

    def __init__(self, start: int = 5, max_step: float = 0.5, gain: float = 1.0) -> None:
        if not max_step > 0:
            raise ValueError(f"refine_max_step: expected a positive number of px, found "
                             f"{max_step}")
        self.start, self.max_step, self.gain = int(start), float(max_step), float(gain)

    def refine(self, solver: RPIE, amplitudes: Any, measured: np.ndarray, mask: Any,
               bounds: tuple[int, int]) -> np.ndarray:
        """Move the measured positions of ``solver`` once; returns the moves (n, 2) px.

        ``bounds``: the largest corner ``(y, x)`` a window may take (object less window).
        """
        mod = solver.xp
        fft = fft_module(mod)
        obj = solver.object
        modes = solver.probe if solver.probe.ndim == 3 else solver.probe[None]
        h, w = modes.shape[-2:]
        spectrum = fft.fft2(modes)
        # central differences of the object (one-sided at its edges)
        gy = mod.zeros_like(obj)
        gx = mod.zeros_like(obj)
        gy[1:-1] = (obj[2:] - obj[:-2]) * 0.5
        gx[:, 1:-1] = (obj[:, 2:] - obj[:, :-2]) * 0.5
        gy[0], gy[-1] = obj[1] - obj[0], obj[-1] - obj[-2]
        gx[:, 0], gx[:, -1] = obj[:, 1] - obj[:, 0], obj[:, -1] - obj[:, -2]
        moves = np.zeros((solver.top.shape[0], 2))
        for j in np.flatnonzero(measured):
            y, x = solver.top[j]
            window = (slice(y, y + h), slice(x, x + w))
            frac = solver.frac[j]
            probe = modes if not frac.any() else fft.ifft2(
                spectrum * shift_ramp(mod, (h, w), frac))
            psi = probe * obj[window]
            far = fft.fft2(psi, norm="ortho")
            # one modulus factor for all modes: the frame is their incoherent sum
            modulus = mod.sqrt(mod.sum(far.real ** 2 + far.imag ** 2, axis=0))
            factor = amplitudes[j] / mod.maximum(modulus, 1e-12)
            if mask is not None:
                factor = mod.where(mask, factor, 1.0)
            dpsi = fft.ifft2(far * factor.astype(far.real.dtype), norm="ortho") - psi
            a, b = probe * gy[window], probe * gx[window]
            terms = mod.stack([_dot(mod, a, a), _dot(mod, a, b), _dot(mod, b, b),
                               _dot(mod, a, dpsi), _dot(mod, b, dpsi)])
            moves[j] = _solve2(to_host(terms))
        moves = np.clip(moves * self.gain, -self.max_step, self.max_step)
        moves[measured] -= moves[measured].mean(axis=0)  # a common shift is the object's
        corners = solver_corners(solver)
        corners[measured] += moves[measured]
        corners = np.clip(corners, 0, np.asarray(bounds, np.float64))
        set_positions(solver, corners)
        return moves


def _dot(mod: Any, a: Any, b: Any) -> Any:
    """``Re sum(conj(a) b)`` on the device (a 0-d array: no host sync per term)."""
    return mod.sum(a.real * b.real + a.imag * b.imag)


def _solve2(v: np.ndarray) -> np.ndarray:
    """The shift ``(dy, dx)`` solving ``[[v0, v1], [v1, v2]] s = (v3, v4)`` (0 if singular)."""
    a, b, d, r0, r1 = (float(t) for t in v)
    det = a * d - b * b
    if not det > 1e-12 * max(a * d, 1e-300) or not math.isfinite(det):
        return np.zeros(2)
    # dpsi ~ P (s . grad O): the data were taken with the window s px further along
    return np.array([(d * r0 - b * r1) / det, (a * r1 - b * r0) / det])


def problem_positions(geometry: Any, scan_shape: tuple[int, int], options: dict[str, Any],
                      ) -> tuple[np.ndarray, np.ndarray, PositionRefiner | None,
                                 tuple[int, int] | None]:
    """Corners, displacements, the refiner (or None) and the object shape (None: the
    solver's default) of a :class:`~framescope.ptycho._problem.Problem`.

    Measured ``options["positions"]`` replace the calibrated grid; with refinement the
    windows get ``options["refine_margin"]`` px of object around them to move into.
    """
    from framescope.ptycho._setup import scan_positions

    n = scan_shape[0] * scan_shape[1]
    given = options.get("positions")
    if given is None:
        corners, moved = scan_positions(scan_shape, geometry.scan_step, geometry.pixel,
                                        rotation=geometry.rotation, flip=geometry.flip)
    else:
        corners, moved = measured_corners(load_positions(given, n), geometry.pixel,
                                          rotation=geometry.rotation, flip=geometry.flip)
    if not options.get("refine_positions"):
        return corners, moved, None, None
    margin = int(options.get("refine_margin", 4))
    if margin < 0:
        raise ValueError(f"refine_margin: expected a non-negative int, found {margin}")
    corners = corners + margin
    h, w = geometry.frame_shape
    top = np.floor(corners + 1e-9).astype(np.int64)
    shape = (int(top[:, 0].max()) + h + margin, int(top[:, 1].max()) + w + margin)
    refiner = PositionRefiner(options.get("refine_start", 5),
                              options.get("refine_max_step", 0.5))
    return corners, moved, refiner, shape


def refine_between_sweeps(refiner: PositionRefiner, solver: RPIE, amplitudes: Any,
                          measured: np.ndarray, mask: Any) -> np.ndarray:
    """One refinement step on ``solver`` (after a sweep); returns the new corners."""
    h, w = solver.probe.shape[-2:]
    oh, ow = solver.object.shape
    refiner.refine(solver, amplitudes, measured, mask, (oh - h, ow - w))
    return solver_corners(solver)


def position_variables(corners: np.ndarray, initial: np.ndarray,
                       pixel_nm: tuple[float, float], scan_shape: tuple[int, int],
                       ) -> dict[str, Any]:
    """``positions`` (as refined) and ``positions_initial``: probe centres ``(y, x)`` in
    nm on the object axes from the first position's initial centre (the ``y``/``x``
    origin), per scan position."""
    out = {}
    for name, c in (("positions", corners), ("positions_initial", initial)):
        nm = (c - initial[0]) * np.asarray(pixel_nm)
        out[name] = (("scan_y", "scan_x", "yx"), nm.reshape(*scan_shape, 2),
                     {"units": "nm", "long_name": f"probe centres ({name.replace('_', ' ')})"})
    return out


def refine_attrs(options: dict[str, Any], refiner: PositionRefiner | None) -> dict[str, Any]:
    """The result's attrs of the positions' source and refinement."""
    given = options.get("positions")
    source = ("calibrated grid" if given is None else given if isinstance(given, str | Path)
              else "array")
    out: dict[str, Any] = {"positions_source": str(source),
                           "refine_positions": int(refiner is not None)}
    if refiner is not None:
        out.update(refine_start=refiner.start, refine_max_step_px=refiner.max_step)
    probe = options.get("probe")
    if probe is not None and type(probe).__name__ == "ZonePlate":
        out.update(zone_plate_diameter_m=probe.diameter,
                   zone_plate_outer_zone_width_m=probe.outer_zone_width,
                   zone_plate_central_stop_m=probe.central_stop)
    return out
