"""Radial profile (azimuthal integration) and max-frame throughput beside the read ceiling.

For a raw uint16 file in the page cache (simulated once under --data-dir, shared with
bench_engine.py), prints GB/s, best of --repeat, for:

- ceiling: a plain ``readinto`` pass over the file into a reused 4 MiB buffer, timed again
  beside every row (on a shared machine the ratio to it is the stable figure);
- framescope, in-process executor (``client="inline"``);
- framescope on a 2-process ``LocalCluster`` (one thread each);
- LiberTEM (peer). LiberTEM 0.16 has no radial-profile UDF (its ``RadialFourierAnalysis``
  computes angular Fourier coefficients of antialiased rings through ``ApplyMasksUDF``), so
  the peer is what a LiberTEM user would run: ``ApplyMasksUDF`` with the same hard-edged
  ring bins as one sparse mask stack (scipy.sparse), on ``Context.make_with("dask",
  cpus=2)``; for the max frame there is no peer row.

    python benchmarks/bench_radial.py --scan 128x128 --det 256x256
"""

from __future__ import annotations

from functools import partial

import numpy as np
from _common import best, engine_setup, plain_read

from framescope.udf import RadialProfile


def cases(h: int, w: int) -> dict[str, dict | None]:
    return {
        "radial 1 px": {},  # every pixel, out to the corners: 182 bins on 256 x 256
        "radial 4 px<r/3": {"bin_width": 4.0, "r_max": h * 100 / 256},  # ~half the pixels
        "max frame": None,
    }


def framescope_run(arr, params: dict | None, client) -> None:
    if params is None:
        arr.fs.max_frame(client=client)
    else:
        arr.fs.radial_profile(**params, client=client)


def ring_stack(params: dict, shape: tuple[int, int]):
    """The same bins as a sparse.pydata COO stack ``(bins, h, w)`` (a LiberTEM mask factory)."""
    import sparse

    udf = RadialProfile(**params)
    bin_map = udf.rings(shape).bin_map()
    ys, xs = np.nonzero(bin_map >= 0)
    coords = np.stack([bin_map[ys, xs], ys, xs])
    n_bins = udf.rings(shape).n_bins
    return sparse.COO(coords, np.ones(ys.size, np.float32), shape=(n_bins, *shape))


def libertem_udf(params: dict, shape: tuple[int, int]):
    from libertem.udf.masks import ApplyMasksUDF

    n_bins = RadialProfile(**params).rings(shape).n_bins
    return ApplyMasksUDF(mask_factories=partial(ring_stack, params, shape), mask_count=n_bins,
                         use_sparse="scipy.sparse", mask_dtype=np.float32)


def check_libertem(ctx, lt_ds, arr, params: dict, shape: tuple[int, int]) -> None:
    """The peer computes the same sums (first 4 frames), so the comparison is like for like."""
    roi = np.zeros(arr.shape[:2], bool)
    roi[0, :4] = True
    got = ctx.run_udf(dataset=lt_ds, udf=libertem_udf(params, shape), roi=roi)
    peer = got["intensity"].raw_data
    ours = arr.fs.radial_profile(**params, normalize="sum", roi=roi, client="inline")
    np.testing.assert_allclose(peer, ours.values[roi], rtol=1e-5)


def main() -> None:
    setup = engine_setup(__doc__)
    args, det, path, arr = setup.args, setup.det, setup.path, setup.arr
    nbytes, t_ceil = arr.nbytes, setup.t_ceil
    client, ctx, lt_ds = setup.client, setup.ctx, setup.lt_ds

    print(f"{path}: {nbytes / 2**30:.2f} GiB uint16, ceiling (plain read) "
          f"{nbytes / t_ceil / 1e9:.2f} GB/s at the start; GB/s = 1e9 bytes/s, best of "
          f"{args.repeat}")
    print(f"{'analysis':<16}{'inline':>9}{'cluster':>9}{'libertem':>9}{'ceiling':>9}"
          f"{'in/ceil':>9}{'cl/ceil':>9}{'cl/LT':>7}")
    for name, params in cases(*det).items():
        # the box may be shared: re-measure the ceiling beside every row, ratios stay fair
        t_ceil = best(lambda: plain_read([path]), args.repeat)
        framescope_run(arr, params, "inline")  # warm: JIT cache load
        t_in = best(lambda p=params: framescope_run(arr, p, "inline"), args.repeat)
        t_cl = t_lt = float("nan")
        if client is not None:
            framescope_run(arr, params, client)
            t_cl = best(lambda p=params: framescope_run(arr, p, client), args.repeat)
        if ctx is not None and params is not None:
            check_libertem(ctx, lt_ds, arr, params, det)
            udf = libertem_udf(params, det)
            ctx.run_udf(dataset=lt_ds, udf=udf)
            t_lt = best(lambda u=udf: ctx.run_udf(dataset=lt_ds, udf=u), args.repeat)
        g = [nbytes / t / 1e9 for t in (t_in, t_cl, t_lt, t_ceil)]
        print(f"{name:<16}{g[0]:>9.2f}{g[1]:>9.2f}{g[2]:>9.2f}{g[3]:>9.2f}"
              f"{g[0] / g[3]:>9.2f}{g[1] / g[3]:>9.2f}{g[1] / g[2]:>7.2f}")

    if client is not None:
        client.close()
    if ctx is not None:
        ctx.close()


if __name__ == "__main__":
    main()
