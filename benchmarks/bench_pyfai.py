"""Azimuthal integration in q over a whole scan: framescope beside the read ceiling and pyFAI.

For a raw uint16 file in the page cache (simulated once under --data-dir, shared with
bench_engine.py), calibrated as an X-ray detector (75 µm pixels, 0.1 m, 12.4 keV; the beam
at the frame centre), prints frames/s and GB/s, best of --repeat, for:

- ceiling: a plain ``readinto`` pass over the file into a reused 4 MiB buffer, timed again
  beside every row (on a shared machine the ratio to it is the stable figure);
- framescope ``arr.fs.radial_profile(unit="q_nm^-1")``, in-process executor (``client=
  "inline"``): every frame's profile, one sparse product per tile;
- pyFAI (peer): ``AzimuthalIntegrator.integrate1d`` frame by frame with the same geometry
  and bins, no pixel splitting, no solid-angle or polarisation correction, on frames read
  from the same file (a memmap) — ``("no", "csr", "cython")``, the engine pyFAI recommends
  for many frames of one geometry, and ``("no", "histogram", "cython")``.

Before timing, the first frames' profiles are compared (they must agree to 1e-5), so the
rows compute the same thing.

    python benchmarks/bench_pyfai.py --scan 64x64 --det 256x256 --no-libertem --no-cluster
"""

from __future__ import annotations

import time

import numpy as np
from _common import best, engine_setup, plain_read

from framescope.calibration import photon_wavelength

PIXEL, DISTANCE, ENERGY = 75e-6, 0.1, 12.4e3  # m, m, eV
N_BINS = 200
# the beam off the pixel grid (no pixel at q = 0, where engines differ by a float's width)
OFF = (-0.3, 0.4)


def integrator(h: int, w: int):
    from pyFAI.detectors import Detector

    try:
        from pyFAI.integrator.azimuthal import AzimuthalIntegrator
    except ImportError:  # pyFAI < 2024.1
        from pyFAI.azimuthalIntegrator import AzimuthalIntegrator
    cy, cx = h // 2 + OFF[0], w // 2 + OFF[1]  # pixel i is centred at (i + 0.5) p
    return AzimuthalIntegrator(dist=DISTANCE, poni1=(cy + 0.5) * PIXEL,
                               poni2=(cx + 0.5) * PIXEL, wavelength=photon_wavelength(ENERGY),
                               detector=Detector(pixel1=PIXEL, pixel2=PIXEL, max_shape=(h, w)))


def main() -> None:
    setup = engine_setup(__doc__)
    args, (h, w), path, arr = setup.args, setup.det, setup.path, setup.arr
    if setup.client is not None:
        setup.client.close()
    if setup.ctx is not None:
        setup.ctx.close()
    arr = arr.fs.calibrate(energy=ENERGY, radiation="xray", camera_length=DISTANCE,
                           pixel_size=PIXEL, center=(h // 2 + OFF[0], w // 2 + OFF[1]))
    # bins out to the inscribed circle (whole rings, no empty corner bins)
    r = (min(h, w) // 2 - 2) * PIXEL
    q_max = 4 * np.pi * np.sin(np.arctan(r / DISTANCE) / 2) / photon_wavelength(ENERGY) * 1e-9
    frames = np.memmap(path, dtype="uint16", mode="r").reshape(-1, h, w)
    n, nbytes = frames.shape[0], arr.nbytes

    def ours():
        return arr.fs.radial_profile(unit="q_nm^-1", n_bins=N_BINS, r_max=q_max,
                                     client="inline")

    prof = ours()
    ai = integrator(h, w)
    methods = {"pyFAI csr": ("no", "csr", "cython"),
               "pyFAI histogram": ("no", "histogram", "cython")}

    def peer(method, count=n):
        for i in range(count):
            ai.integrate1d(frames[i], N_BINS, unit="q_nm^-1", radial_range=(0, q_max),
                           method=method, correctSolidAngle=False, polarization_factor=None)

    flat = prof.values.reshape(n, N_BINS)
    for name, method in methods.items():  # like for like: the same profiles
        for i in range(3):
            ref = ai.integrate1d(frames[i], N_BINS, unit="q_nm^-1", radial_range=(0, q_max),
                                 method=method, correctSolidAngle=False,
                                 polarization_factor=None)
            np.testing.assert_allclose(prof["q"].values, ref.radial, rtol=1e-5)
            np.testing.assert_allclose(flat[i], ref.intensity, rtol=1e-5,
                                       err_msg=f"{name} frame {i}")

    print(f"{path}: {n} frames of {h}x{w} uint16 ({nbytes / 2**30:.2f} GiB), {N_BINS} q bins "
          f"to {q_max:.2f} 1/nm; best of {args.repeat}; GB/s = 1e9 bytes/s")
    print(f"{'row':<18}{'frames/s':>10}{'GB/s':>8}{'ceiling':>9}{'/ceiling':>9}")
    rows = {"framescope inline": ours,
            **{k: (lambda m=m: peer(m)) for k, m in methods.items()}}
    results = {}
    for name, fn in rows.items():
        t_ceil = best(lambda: plain_read([path]), args.repeat)
        if name.startswith("framescope"):
            fn()  # warm: the JIT cache is loaded
            t = best(fn, args.repeat)
        else:  # warm on a few frames (pyFAI builds its CSR matrix once per geometry), then
            peer(methods[name], 8)  # one whole pass: repeating it takes minutes
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        results[name] = t
        print(f"{name:<18}{n / t:>10.0f}{nbytes / t / 1e9:>8.2f}{nbytes / t_ceil / 1e9:>9.2f}"
              f"{t_ceil / t:>9.3f}")
    for name in methods:
        print(f"framescope / {name}: {results[name] / results['framescope inline']:.1f}x")


if __name__ == "__main__":
    main()
