"""py4DSTEM's single-slice ptychography as a peer for ``framescope.ptycho``.

Reads frames written by ``bench_ptycho_peer.py`` (an ``.npy`` of shape
``(scan_y, scan_x, det_y, det_x)``, zero frequency at ``center_px``) and their calibration
(a JSON file, fields below), builds a py4DSTEM ``DataCube`` calibrated from it, runs
``SingleslicePtychography`` (``preprocess``, then ``reconstruct`` with its default
gradient descent) and prints one JSON line: timings of loading, preprocessing and the
iterations, the error per iteration, and where the complex object and the probe positions
(object px, one row per frame in row-major scan order) were saved.

Calibration fields (``--meta``): ``energy_eV``; ``semiconv_mrad`` (aperture radius, soft
over one detector pixel as the simulated one); ``angle_per_px_mrad``; ``scan_step_A``
(``[dy, dx]``, equal); ``defocus_A``: ``C10`` in the probe ``A(k) exp(-i pi lambda C10
|k|^2)`` (py4DSTEM's ``C10``; its ``defocus`` alias is ``-C10``); ``rotation_deg``; ``flip``
(must be false: py4DSTEM has a transpose, not a flip); ``center_px`` (``[cy, cx]``).

Needs the ``.venv-py4dstem`` environment (``bash benchmarks/setup_py4dstem.sh``)::

    .venv-py4dstem/bin/python benchmarks/_peer_py4dstem.py --data X.npy --meta X.json \
        --iterations 10 --json

From framescope's environment call :func:`measure`, which runs that command in a
subprocess and returns its JSON as a dict. This module imports only the standard library
at the top, so it imports in either environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-py4dstem" / "bin" / "python"
META_FIELDS = ("energy_eV", "semiconv_mrad", "angle_per_px_mrad", "scan_step_A",
               "defocus_A", "rotation_deg", "flip", "center_px")


def measure(data: str | os.PathLike[str], meta: str | os.PathLike[str], iterations: int, *,
            batch: int | None = None, step_size: float | None = None,
            timeout: float = 3600.0,
            python: str | os.PathLike[str] = PEER_PYTHON) -> dict[str, Any]:
    """Run the py4DSTEM peer in its own environment; its JSON line as a dict.

    Parameters
    ----------
    data, meta
        The frames (``.npy``) and their calibration (JSON, fields in the module docstring).
    iterations
        py4DSTEM iterations (each a pass over all positions).
    batch
        ``max_batch_size``: positions per gradient step (None: all at once, the default).
    step_size
        Gradient step (None: py4DSTEM's default, 0.5).
    timeout
        Seconds for the whole run.
    python
        The interpreter of the py4DSTEM environment.

    Raises
    ------
    FileNotFoundError
        The py4DSTEM environment is missing (run ``benchmarks/setup_py4dstem.sh``).
    RuntimeError
        The peer failed or printed no JSON line; the message holds its stderr tail.
    """
    if not Path(python).exists():
        raise FileNotFoundError(f"{python} not found: run bash benchmarks/setup_py4dstem.sh")
    cmd = [str(python), str(Path(__file__).resolve()), "--data", str(data), "--meta",
           str(meta), "--iterations", str(int(iterations)), "--json"]
    if batch is not None:
        cmd += ["--batch", str(int(batch))]
    if step_size is not None:
        cmd += ["--step-size", str(float(step_size))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"py4DSTEM peer failed (exit {proc.returncode}): "
                           f"{proc.stderr[-3000:] or proc.stdout[-3000:]}")
    return json.loads(lines[-1])


def read_meta(path: Path) -> dict[str, Any]:
    """The calibration JSON, checked field by field."""
    meta = json.loads(path.read_text())
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise ValueError(f"{path}: calibration fields {missing} missing (expected all of "
                         f"{list(META_FIELDS)}, found {sorted(meta)})")
    dy, dx = meta["scan_step_A"]
    if abs(dy - dx) > 1e-9 * max(abs(dy), abs(dx)):
        raise ValueError(f"{path}: scan_step_A must be equal along y and x (a py4DSTEM "
                         f"DataCube has one real-space pixel size), found {[dy, dx]}")
    if meta["flip"]:
        raise ValueError(f"{path}: flip must be false (py4DSTEM transposes, it does not "
                         f"flip), found {meta['flip']!r}")
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--meta", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--batch", type=int, default=None,
                    help="max_batch_size (default: all positions in one gradient step)")
    ap.add_argument("--step-size", type=float, default=None)
    ap.add_argument("--out", type=Path, default=None,
                    help="object .npy (default: next to --data, *_py4dstem_object.npy)")
    ap.add_argument("--json", action="store_true", help="one JSON line on stdout")
    args = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")  # preprocess draws nothing here, but imports pyplot
    import numpy as np
    import py4DSTEM
    from py4DSTEM.process.phase import SingleslicePtychography

    meta = read_meta(args.meta)
    t0 = time.perf_counter()
    frames = np.load(args.data)
    if frames.ndim != 4:
        raise ValueError(f"{args.data}: frames must be 4D (scan_y, scan_x, det_y, det_x), "
                         f"found shape {frames.shape}")
    # py4DSTEM's (Rx, Ry, Qx, Qy) are our (scan_y, scan_x, det_y, det_x): the first real and
    # the first reciprocal axis stay paired, so no transpose is involved
    cube = py4DSTEM.DataCube(data=frames)
    angle = float(meta["angle_per_px_mrad"])
    cube.calibration.set_R_pixel_size(float(meta["scan_step_A"][0]))
    cube.calibration.set_R_pixel_units("A")
    cube.calibration.set_Q_pixel_size(angle)
    cube.calibration.set_Q_pixel_units("mrad")
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    # the simulated aperture falls from 1 to 0 between semiconv -/+ half a pixel; py4DSTEM's
    # cosine roll-off ends at the cutoff, so cutoff = semiconv + half a pixel, roll-off one
    ptycho = SingleslicePtychography(
        energy=float(meta["energy_eV"]), datacube=cube,
        semiangle_cutoff=float(meta["semiconv_mrad"]) + angle / 2, rolloff=angle,
        polar_parameters={"C10": float(meta["defocus_A"])}, device="cpu", verbose=False,
    )
    scan = frames.shape[:2]
    cy, cx = (float(c) for c in meta["center_px"])
    # the calibrated centre, not a plane fitted to the COM: framescope uses the same
    ptycho.preprocess(
        plot_center_of_mass=False, plot_rotation=False, plot_probe_overlaps=False,
        force_com_rotation=float(meta["rotation_deg"]), force_com_transpose=False,
        force_com_shifts=(np.full(scan, cy), np.full(scan, cx)),
    )
    t_pre = time.perf_counter() - t0

    options: dict[str, Any] = {"num_iter": args.iterations, "reset": True,
                               "progress_bar": False, "seed_random": 0}
    if args.batch is not None:
        options["max_batch_size"] = args.batch
    if args.step_size is not None:
        options["step_size"] = args.step_size
    t0 = time.perf_counter()
    ptycho.reconstruct(**options)
    t_rec = time.perf_counter() - t0

    out = args.out or args.data.with_name(args.data.stem + "_py4dstem_object.npy")
    positions_out = out.with_name(out.stem.removesuffix("_object") + "_positions_px.npy")
    sampling = np.asarray(ptycho.sampling, dtype=float)
    np.save(out, np.asarray(ptycho.object))
    np.save(positions_out, np.asarray(ptycho.positions) / sampling)
    result = {
        "peer": "py4DSTEM", "version": py4DSTEM.__version__, "numpy": np.__version__,
        "method": "gradient-descent", "iterations": args.iterations,
        "max_batch_size": args.batch, "step_size": args.step_size or 0.5,
        "frames": int(np.prod(scan)), "frame_shape": list(frames.shape[2:]),
        "load_s": t_load, "preprocess_s": t_pre, "reconstruct_s": t_rec,
        "iterations_per_s": args.iterations / t_rec,
        "error": [float(e) for e in ptycho.error_iterations],
        "object": str(out), "positions_px": str(positions_out),
        "object_shape": list(np.shape(ptycho.object)), "object_sampling_A": list(sampling),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
