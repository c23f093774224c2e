"""A ring virtual image with detector corrections, beside the uncorrected one, the read
ceiling and LiberTEM's corrections on the same file.

For a raw uint16 file in the page cache (simulated once under --data-dir, shared with
bench_engine.py), prints GB/s, best of --repeat, in-process executor (``client="inline"``):

- ceiling: a plain ``readinto`` pass over the file, timed again beside every row;
- framescope: the ring uncorrected; with dark + gain + 0.1 % bad pixels (zero, then the
  mean of good neighbours): linear, so folded into the ring's weights, the frames read as
  they are; the same plus a threshold (not linear: every tile corrected into a float32
  buffer first, the stage's general path);
- LiberTEM (peer): ``ApplyMasksUDF`` with the same ring, uncorrected and with a
  ``CorrectionSet`` of the same dark, gain and excluded pixels, on
  ``Context.make_with("inline")`` (one process, like framescope's row).

The corrected images are checked against LiberTEM's before timing (dark + gain: equal to
1e-4). LiberTEM repairs excluded pixels by interpolating its own neighbourhood: its row
stands beside framescope's neighbour fill, timed, not compared.

    python benchmarks/bench_corrections.py --scan 128x128 --det 256x256 --no-cluster
"""

from __future__ import annotations

import numpy as np
from _common import best, engine_setup, plain_read

import framescope.masks as fm
from framescope.corrections import Corrections


def main() -> None:
    setup = engine_setup(__doc__)
    args, (h, w), path, arr = setup.args, setup.det, setup.path, setup.arr
    if setup.client is not None:
        setup.client.close()
    if setup.ctx is not None:
        setup.ctx.close()
    rng = np.random.default_rng(0)
    dark = rng.normal(2.0, 0.2, (h, w)).astype(np.float32)
    gain = rng.uniform(0.9, 1.1, (h, w)).astype(np.float32)
    bad = rng.random((h, w)) < 0.001
    ring = fm.ring(h / 2, w / 2, h * 40 / 256, h * 90 / 256)
    rows = {
        "uncorrected": None,
        "dark+gain+bad(0)": Corrections(dark=dark, gain=gain, bad=bad),
        "+neighbours": Corrections(dark=dark, gain=gain, bad=bad, bad_fill="neighbours"),
        "+threshold": Corrections(dark=dark, gain=gain, bad=bad, threshold=0.5),
    }

    lt = lt_ds = None
    if not args.no_libertem:
        try:
            import libertem.api as lt_api
            from libertem.corrections import CorrectionSet
            from libertem.udf.masks import ApplyMasksUDF

            lt = lt_api.Context.make_with("inline")
            lt_ds = lt.load("raw", path=str(path), nav_shape=setup.scan, sig_shape=(h, w),
                            dtype="uint16")
        except ImportError:
            print("libertem not installed: pip install 'framescope[bench]'")
    raster = ring.rasterize((h, w))

    def ours(c):
        return arr.fs.virtual_image(ring, corrections=c, cache=False, client="inline")

    def peer(cset):
        udf = ApplyMasksUDF(mask_factories=[lambda: raster])
        return lt.run_udf(dataset=lt_ds, udf=udf, corrections=cset)

    csets = {}
    if lt is not None:
        ys, xs = np.nonzero(bad)
        # LiberTEM repairs excluded pixels from their neighbours: beside that row
        csets = {"uncorrected": None,
                 "+neighbours": CorrectionSet(dark=dark, gain=gain,
                                              excluded_pixels=np.array([ys, xs]),
                                              allow_empty=True)}
        got = ours(Corrections(dark=dark, gain=gain)).values
        ref = peer(CorrectionSet(dark=dark, gain=gain))["intensity"].data[..., 0]
        np.testing.assert_allclose(got, ref, rtol=1e-4)

    print(f"{path}: {arr.nbytes / 2**30:.2f} GiB uint16, ring {h * 40 / 256:.0f}..."
          f"{h * 90 / 256:.0f} px; GB/s = 1e9 bytes/s, best of {args.repeat}")
    print(f"{'row':<20}{'framescope':>11}{'/uncorr':>9}{'libertem':>10}{'/uncorr':>9}"
          f"{'ceiling':>9}{'fs/LT':>7}")
    base = base_lt = None
    for name, c in rows.items():
        t_ceil = best(lambda: plain_read([path]), args.repeat)
        ours(c)  # warm: JIT cache, fold
        t = best(lambda c=c: ours(c), args.repeat)
        g = arr.nbytes / t / 1e9
        base = g if base is None else base
        g_lt = float("nan")
        if name in csets:
            peer(csets[name])
            t_lt = best(lambda cs=csets[name]: peer(cs), args.repeat)
            g_lt = arr.nbytes / t_lt / 1e9
            base_lt = g_lt if base_lt is None else base_lt
        print(f"{name:<20}{g:>11.2f}{g / base:>9.2f}{g_lt:>10.2f}"
              f"{(g_lt / base_lt) if base_lt else float('nan'):>9.2f}"
              f"{arr.nbytes / t_ceil / 1e9:>9.2f}{g / g_lt:>7.2f}")
    if lt is not None:
        lt.close()


if __name__ == "__main__":
    main()
