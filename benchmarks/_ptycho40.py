"""The peer for SSB ptychography: ptychography40's ``SSB_UDF`` on LiberTEM, from a
framescope :class:`~framescope.calibration.Calibration`.

``pip install 'framescope[bench]'`` brings ptychography40 (GPL; only called here, never
copied into framescope). Conventions, checked on framescope's synthetic data (see
/tmp/ssb_notes.md of issue 16):

* ``lamb`` wavelength (m), ``dpix`` scan step ``(dy, dx)`` (m), ``semiconv`` (rad),
  ``semiconv_pix`` the bright-field disk *radius* in detector px (its UDF docstring says
  diameter; its mask code uses a radius), ``cy``/``cx`` the optical axis on the detector;
* ``transformation``: a 2x2 matrix taking scan-axis vectors to detector axes is applied
  to row vectors, ``(s_y, s_x) @ T``; LiberTEM's COM convention ``rotate(r) @ flip_y()``
  (detector -> scan, framescope's ``R(rotation) @ F``) is what it expects;
* its result ``complex`` is ``sqrt(|o|) exp(i angle(o))`` with ``o = ifft2(fourier)`` the
  inverse of the accumulated object spectrum (the zero frequency is the mean bright-field
  intensity, so ``o`` is a large real constant plus the phase contrast); ``phase`` is
  ``angle(o)``. It does not bin: every detector pixel enters its sparse trotter masks.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from framescope.calibration import Calibration

__all__ = ["ssb_parameters", "ssb_ptychography40", "time_ssb_ptychography40"]


def ssb_parameters(calibration: Calibration, det_shape: tuple[int, int]) -> dict[str, Any]:
    """``SSB_UDF`` keyword arguments for frames of ``det_shape`` with ``calibration``.

    Raises
    ------
    ValueError
        The calibration lacks energy, semiconv, the detector angle or the scan step.
    """
    from libertem.corrections.coordinates import flip_y, identity, rotate

    cal = calibration
    missing = [name for name, v in (("energy", cal.wavelength), ("semiconv", cal.semiconv),
                                    ("angle_per_px", cal.detector_angle),
                                    ("scan_step", cal.scan_step)) if v is None]
    if missing:
        raise ValueError(f"ssb_ptychography40: the calibration lacks {missing}; expected "
                         f"energy, semiconv, angle_per_px and scan_step, found {cal!r}")
    cy, cx = cal.centre(det_shape)
    transformation = rotate(cal.rotation) @ (flip_y() if cal.flip else identity())
    return {"lamb": cal.wavelength, "dpix": tuple(cal.scan_step), "semiconv": cal.semiconv,
            "semiconv_pix": cal.semiconv / cal.detector_angle, "cy": cy, "cx": cx,
            "transformation": transformation}


def _context(executor: Literal["inline", "dask"], workers: int) -> Any:
    import libertem.api as lt

    if executor == "inline":
        return lt.Context.make_with("inline")
    if executor == "dask":
        return lt.Context.make_with("dask", cpus=workers)
    raise ValueError(f"executor: expected 'inline' or 'dask', found {executor!r}")


def _run(ctx: Any, frames: np.ndarray, calibration: Calibration,
         dtype: Any) -> tuple[np.ndarray, dict[str, float]]:
    from ptychography40.reconstruction.ssb import SSB_UDF

    t0 = time.perf_counter()
    ds = ctx.load("memory", data=frames, sig_dims=2)
    udf = SSB_UDF(**ssb_parameters(calibration, frames.shape[2:]), dtype=dtype)
    t1 = time.perf_counter()
    res = ctx.run_udf(dataset=ds, udf=udf)
    t2 = time.perf_counter()
    return np.asarray(res["complex"].data), {"load": t1 - t0, "run": t2 - t1}


def ssb_ptychography40(frames: np.ndarray, calibration: Calibration, *,
                       executor: Literal["inline", "dask"] = "inline", workers: int = 2,
                       dtype: Any = np.float32) -> np.ndarray:
    """ptychography40's SSB of ``frames`` ``(sy, sx, dy, dx)`` with ``calibration``.

    Parameters
    ----------
    frames : numpy.ndarray
        4D frames (any real dtype; LiberTEM's memory dataset).
    calibration : framescope.calibration.Calibration
        Needs ``energy``, ``semiconv``, ``angle_per_px`` and ``scan_step``; ``center``,
        ``rotation`` and ``flip`` are passed on.
    executor : {"inline", "dask"}
        LiberTEM's inline executor (this process) or a local dask cluster of ``workers``
        processes (started and closed here).
    dtype
        ptychography40's computation dtype.

    Returns
    -------
    numpy.ndarray
        complex ``(sy, sx)``: ptychography40's ``complex`` result (module docstring);
        ``np.angle`` of it is its phase in rad.
    """
    ctx = _context(executor, workers)
    try:
        return _run(ctx, frames, calibration, dtype)[0]
    finally:
        ctx.close()


def time_ssb_ptychography40(frames: np.ndarray, calibration: Calibration, *,
                            executor: Literal["inline", "dask"] = "inline",
                            workers: int = 2, repeat: int = 3,
                            dtype: Any = np.float32) -> dict[str, float]:
    """Best of ``repeat`` runs in one context (the first also builds the masks and
    compiles numba): seconds of the ``first`` and ``best`` runs and ``frames_per_s`` of the
    best; the trotter masks are rebuilt in every run (ptychography40 makes them per task).
    """
    ctx = _context(executor, workers)
    try:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            _run(ctx, frames, calibration, dtype)
            times.append(time.perf_counter() - t0)
    finally:
        ctx.close()
    n = frames.shape[0] * frames.shape[1]
    return {"first": times[0], "best": min(times), "frames_per_s": n / min(times)}


def main() -> None:
    """``python benchmarks/_ptycho40.py [scan] [executor] [workers]``: time ptychography40 on
    framescope's synthetic weak phase object (BF disk radius 1/6 of a 64 px detector)."""
    import sys

    from framescope.datasets import synthetic

    scan = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    executor = sys.argv[2] if len(sys.argv) > 2 else "inline"
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    arr = synthetic(scan=(scan, scan), det=(64, 64), dose=1e6, semiconv=64 / 6,
                    atom_phase=0.1, smooth_phase=0.1, calibrated=True)
    frames = np.asarray(arr)
    t = time_ssb_ptychography40(frames, arr.fs.calibration, executor=executor,
                                workers=workers)
    print(f"ptychography40 SSB {scan}x{scan}x64x64 {executor}"
          f"{f' ({workers} workers)' if executor == 'dask' else ''}: first {t['first']:.2f} s, "
          f"best {t['best']:.2f} s, {t['frames_per_s']:.0f} frames/s")


if __name__ == "__main__":
    main()
