"""``reconstruct``: rPIE/ePIE or RAAR/DM ptychography of a file-backed array or a live
stream.

Frames reach the solver through the engine (:class:`~framescope.ptycho.CollectFrames`):
``framescope.run`` for an array, ``framescope.submit`` for a live source. With a stream
the solver iterates, in the caller's thread, over the frames received so far (unmeasured
positions have weight 0) while the receiver goes on in its own; once the series has
ended it runs ``iterations`` more sweeps over everything received.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import xarray as xr

from framescope.engine import run, submit
from framescope.engine._submit import is_stream
from framescope.ptycho._collect import CollectFrames
from framescope.ptycho._problem import Geometry, Problem
from framescope.udf._backend import resolve_backend

__all__ = ["reconstruct"]

_POLL = 0.02  # s between looks at a stream before its first frames (no solver to run yet)


def reconstruct(
    source: Any,
    *,
    iterations: int = 50,
    algorithm: Literal["rpie", "epie", "raar", "dm"] = "rpie",
    alpha: float | None = None,
    beta: float = 1.0,
    probe_step: float = 1.0,
    probe_start: int = 2,
    raar_beta: float | None = None,
    modes: int = 1,
    seed: int = 0,
    defocus: float | str = 0.0,
    probe: Any = None,
    crop: int | tuple[int, int] | None = None,
    bin: int = 1,
    center: tuple[float, float] | None = None,
    energy: float | str | None = None,
    semiconv: float | str | None = None,
    angle_per_px: float | str | None = None,
    scan_step: float | str | tuple[float, float] | None = None,
    rotation: float | str | None = None,
    flip: bool | None = None,
    radiation: Literal["electron", "xray"] | None = None,
    camera_length: float | str | None = None,
    pixel_size: float | str | None = None,
    positions: Any = None,
    refine_positions: bool = False,
    refine_start: int = 5,
    refine_max_step: float = 0.5,
    subpixel: bool = True,
    mask: Any = None,
    backend: str | None = None,
    schedule: Any = None,
    callback: Callable[[xr.Dataset], Any] | None = None,
    update_every: int = 5,
    stop: threading.Event | None = None,
    timeout: float | None = None,
    **run_opts: Any,
) -> xr.Dataset:
    """Reconstruct object and probe by rPIE (or ePIE) from a file or a live stream.

    Parameters
    ----------
    source : xarray.DataArray or live source
        ``(scan_y, scan_x, det_y, det_x)`` frames (e.g. :func:`framescope.open`), or a live
        source (:class:`framescope.live.ZMQSource`): the solver starts with the first
        frames and refines while the scan runs.
    iterations : int
        Sweeps over all positions (a stream: after its series ended, on top of the sweeps
        run while frames arrived).
    algorithm : {"rpie", "epie", "raar", "dm"}
        ``"epie"`` is rPIE with ``alpha = beta = 1``; ``"raar"`` updates all positions
        at once from exit waves kept per position (:class:`~framescope.ptycho.RAAR`:
        ``n_positions * modes`` frames of complex64 in memory), ``"dm"`` (difference
        map) is RAAR with ``raar_beta = 1``. A RAAR "sweep" is one iteration.
    alpha, beta : float
        rPIE regularisation of the object (default 0.1) and probe (default 1) updates.
    probe_step : float
        rPIE: fraction of each position's probe update applied (1, as published). With
        noisy frames 0.1-0.3 keeps the probe from following each frame's noise (the error
        then stays at the fixed-probe level instead of rising once the probe is updated).
    probe_start : int
        First iteration (0-based) that updates the probe.
    raar_beta : float, optional
        RAAR relaxation in (0, 1] (default 0.75; ``"dm"``: 1).
    modes : int
        Mixed-state probe modes (Thibault & Menzel 2013): the extra modes start as
        Hermite-like shapes of the probe with 5 % of the intensity each
        (:func:`~framescope.ptycho.initial_modes`) and are kept orthogonal; the result's
        ``probe_amplitude``/``probe_phase`` then have a leading ``mode`` dim (strongest
        first) and ``probe_power`` gives each mode's share.
    seed : int
        Seeds the order of positions (a permutation of all positions per iteration).
    defocus : float or str
        Probe defocus, m (or ``"20 nm"``): ``chi(k) = pi * lambda * defocus * |k|^2``.
    probe : complex array or ZonePlate, optional
        Initial probe on the collected frame's window instead of the calibrated one; a
        :class:`~framescope.ptycho.ZonePlate` (X-ray): its focus, ``defocus`` m
        downstream (:func:`~framescope.ptycho.zone_plate_probe`).
    crop, bin, center
        Detector window, binning and beam centre of :class:`CollectFrames`.
    energy, semiconv, angle_per_px, scan_step, rotation, flip
        Override the data's calibration (SI numbers or strings with units).
    radiation, camera_length, pixel_size
        Also calibration overrides: ``radiation="xray"`` makes ``energy`` a photon energy
        (``"8 keV"``: ``lambda = h c / E``); the sample-detector distance and the
        detector pixel give the angle per pixel (``pixel_size / camera_length``).
    positions : array, str or path, optional
        Measured probe positions instead of the calibrated grid: ``(n, 2)`` ``(y, x)`` in
        m along the scan axes, one per frame in row-major scan order (the calibration's
        rotation and flip apply, ``scan_step`` is not needed), a ``.npy`` file, or an
        HDF5 dataset ``"file.h5::/entry/positions"`` (its ``units`` attribute honoured);
        from a values stream: :func:`~framescope.ptycho.positions_from_stream`.
    refine_positions : bool
        Refine the positions after every sweep from ``refine_start`` on (gradient
        method, at most ``refine_max_step`` object px per sweep and axis); the windows
        get 4 px of object to move into.
    subpixel : bool
        Sub-pixel positions by Fourier-shifting the probe (else rounded: an error of up to
        half an object pixel; ``attrs["subpixel"]`` says which).
    mask : bool array, optional
        Detector pixels measured (collected frame shape, zero frequency at ``h//2``).
    backend : {None, "numpy", "cupy"}
        Array module of the solver (frames are collected on the host).
    schedule : array of int, shape scan, optional
        Replay a live run offline: ``first_iteration`` of its result (position ``j`` joins
        at sweep ``schedule[j]``, never when negative); ``iterations`` then counts all
        sweeps (a live result's ``attrs["iterations"]``).
    callback : callable, optional
        Called with the reconstruction so far every ``update_every`` sweeps (in the
        solver's thread; keep it short).
    stop : threading.Event, optional
        Set it to stop early: the reconstruction so far is returned.
    timeout : float, optional
        Streams: seconds to wait for the first frames (``TimeoutError``).
    **run_opts
        Passed to :func:`framescope.run` / :func:`framescope.submit` (``client``,
        ``corrections``, ...).

    Returns
    -------
    xarray.Dataset
        ``object_phase`` (rad) and ``object_amplitude`` over ``(y, x)`` in nm from the
        first probe centre (for an unrotated scan the scan coordinates: ``ds.interp(y=
        scan_y, x=scan_x)``; any scan: ``ds.object_phase.interp(y=ds.position_y,
        x=ds.position_x)``); ``probe_amplitude``/``probe_phase`` over ``(probe_y,
        probe_x)``; ``position_y``/``position_x`` (nm) and ``measured``,
        ``first_iteration`` per scan position, ``positions`` and ``positions_initial``
        (nm, ``(scan_y, scan_x, yx)``: as refined and as given; the same without
        refinement); ``error`` and ``positions_per_iteration``
        per ``iteration``; the parameters in ``attrs`` (``complete``: every position was
        measured; ``stopped``: ``stop`` ended it).

    Raises
    ------
    framescope.calibration.CalibrationError
        The calibration lacks ``energy``, ``angle_per_px`` or ``scan_step`` (or
        ``semiconv`` without ``probe``).
    ValueError
        Bad parameters.

    Examples
    --------
    >>> from framescope.datasets import synthetic
    >>> arr = synthetic(scan=(8, 8), det=(32, 32), semiconv=6, step=3, calibrated=True)
    >>> ds = reconstruct(arr, iterations=2, client="inline")
    >>> ds["object_phase"].dims, ds.sizes["iteration"]
    (('y', 'x'), 2)
    """
    if algorithm not in ("rpie", "epie", "raar", "dm"):
        raise ValueError(f"algorithm: expected 'rpie', 'epie', 'raar' or 'dm', found "
                         f"{algorithm!r}")
    if algorithm == "dm" and raar_beta not in (None, 1.0):
        raise ValueError(f"algorithm='dm' is RAAR with raar_beta = 1, found "
                         f"raar_beta={raar_beta}")
    if raar_beta is not None and not 0 < raar_beta <= 1:
        raise ValueError(f"raar_beta: expected 0 < raar_beta <= 1, found {raar_beta}")
    if int(modes) != modes or modes < 1:
        raise ValueError(f"modes: expected an int >= 1, found {modes}")
    if algorithm == "epie":
        if alpha not in (None, 1.0) or beta != 1.0:
            raise ValueError(f"algorithm='epie' is rPIE with alpha = beta = 1, found "
                             f"alpha={alpha}, beta={beta}")
        alpha = 1.0
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations: expected a non-negative int, found {iterations}")
    if isinstance(defocus, str):
        from framescope.calibration import parse_quantity

        defocus = parse_quantity(defocus, "length", "defocus")
    udf = CollectFrames(crop=crop, bin=bin, center=center)
    options = {
        "defocus": float(defocus), "probe": probe, "alpha": 0.1 if alpha is None else alpha,
        "beta": beta, "probe_step": float(probe_step), "probe_start": probe_start,
        "seed": seed, "subpixel": subpixel,
        "backend": resolve_backend(backend or "numpy"), "mask": mask,
        "algorithm": algorithm, "collect": udf.params(), "modes": int(modes),
        "raar_beta": (1.0 if algorithm == "dm" else 0.75) if raar_beta is None else raar_beta,
        "positions": positions, "refine_positions": bool(refine_positions),
        "refine_start": refine_start, "refine_max_step": refine_max_step,
    }
    overrides = {"energy": energy, "semiconv": semiconv, "angle_per_px": angle_per_px,
                 "scan_step": scan_step, "rotation": rotation, "flip": flip,
                 "radiation": radiation, "camera_length": camera_length,
                 "pixel_size": pixel_size}
    loop = _Loop(int(iterations), options, overrides, udf, callback, update_every, stop)
    if not is_stream(source):
        return loop.offline(run(udf, source, **run_opts), schedule)
    if schedule is not None:
        raise ValueError("schedule= replays a live run offline: give it an array, not a "
                         "live source")
    with submit(udf, source, **run_opts) as job:
        return loop.live(job, timeout)


class _Loop:
    """The iteration loop shared by files and streams."""

    def __init__(self, iterations: int, options: dict[str, Any], overrides: dict[str, Any],
                 udf: CollectFrames, callback: Callable[[xr.Dataset], Any] | None,
                 update_every: int, stop: threading.Event | None) -> None:
        self.iterations, self.options, self.overrides = iterations, options, overrides
        self.udf, self.callback = udf, callback
        self.update_every, self.stop = max(1, int(update_every)), stop
        self.problem: Problem | None = None

    def _problem(self, ds: xr.Dataset) -> Problem:
        from framescope.calibration import Calibration

        text = ds.attrs.get("calibration")
        cal = Calibration.from_json(text) if text else None
        det = tuple(int(v) for v in ds["det_shape"].values)
        geometry = Geometry.of(cal, det, self.udf, self.overrides,
                               need_step=self.options.get("positions") is None)
        scan = (ds.sizes["scan_y"], ds.sizes["scan_x"])
        return Problem(geometry, scan, self.options)

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _sweep(self) -> None:
        assert self.problem is not None
        self.problem.iterate()
        if self.callback is not None and self.problem.solver.iteration % self.update_every == 0:
            self.callback(self.problem.result({"complete": int(self.problem.measured.all()),
                                               "live_partial": 1}))

    def _finish(self, live: bool) -> xr.Dataset:
        p = self.problem
        assert p is not None
        return p.result({"complete": int(p.measured.all()), "stopped": int(self._stopped()),
                         "live": int(live)})

    def offline(self, ds: xr.Dataset, schedule: Any) -> xr.Dataset:
        self.problem = p = self._problem(ds)
        frames = _flat_frames(ds)
        done = ds["done"].values.ravel()
        if schedule is None:
            first = np.where(done, 0, -1)
        else:
            first = np.asarray(schedule).ravel()
            if first.shape != done.shape:
                raise ValueError(f"schedule: expected the scan shape {p.scan_shape}, found "
                                 f"{np.shape(schedule)}")
            if np.any((first >= 0) & ~done):
                raise ValueError("schedule: names positions the data has no frame for")
        p.ingest(frames, first == 0)
        if not p.measured.any():
            raise ValueError("reconstruct: no measured frame to start from")
        p.start(frames)
        for i in range(self.iterations):
            if self._stopped():
                break
            if i:
                p.ingest(frames, (first >= 0) & (first <= i))
            self._sweep()
        return self._finish(live=False)

    def live(self, job: Any, timeout: float | None) -> xr.Dataset:
        started = time.monotonic()
        seen, ended, extra = -1, False, 0
        while not self._stopped():
            if not ended:
                ended, seen = self._receive(job, seen)
            p = self.problem
            if p is None or p.solver is None:
                if ended:
                    raise RuntimeError("reconstruct: the stream's series ended without a "
                                       "frame")
                if job.done():
                    raise RuntimeError(f"stream ended before any frame "
                                       f"({job.status.last_error or job.status.state})")
                if timeout is not None and time.monotonic() - started > timeout:
                    raise TimeoutError(f"no frame within {timeout:g} s "
                                       f"(state {job.status.state!r})")
                time.sleep(_POLL)
                continue
            if ended:
                if extra >= self.iterations:
                    break
                extra += 1
            self._sweep()
        if self.problem is None or self.problem.solver is None:
            raise RuntimeError("reconstruct: stopped before any frame arrived")
        return self._finish(live=True)

    def _receive(self, job: Any, seen: int) -> tuple[bool, int]:
        """Take new frames from the job; returns (series ended, frames seen)."""
        n = job.status.frames_processed
        try:
            ds, ended = job.result(0), True  # the series ended (complete or not)
        except TimeoutError:
            ended = False
            if n == seen:  # nothing new: skip copying the frame buffer
                return False, seen
            ds = job.partial()
            if ds is None:
                return False, seen
        except RuntimeError:  # cancelled or failed: keep what came
            if self.problem is None:
                raise
            return True, seen
        done = ds["done"].values.ravel()
        if not done.any():  # a series began, no frame yet (and no detector shape)
            return ended, n
        if self.problem is None:
            self.problem = self._problem(ds)
        frames = _flat_frames(ds)
        self.problem.ingest(frames, done)
        if self.problem.solver is None and self.problem.measured.any():
            self.problem.start(frames)
        return ended, n


def _flat_frames(ds: xr.Dataset) -> np.ndarray:
    f = ds["frames"].values
    return f.reshape(-1, *f.shape[2:])
