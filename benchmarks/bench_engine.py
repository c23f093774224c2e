"""Engine throughput: virtual images, COM and sum frame, beside the read ceiling and LiberTEM.

For a raw uint16 file in the page cache (simulated once under --data-dir), prints GB/s, best
of --repeat, for:

- ceiling: a plain ``readinto`` pass over the file into a reused 4 MiB buffer;
- framescope, in-process executor (``client="inline"``);
- framescope on a 2-process ``LocalCluster`` (one thread each);
- LiberTEM (peer): the same analyses on ``Context.make_with("dask", cpus=2)``;

and the latency from a new mask to the complete virtual image on a persisted dataset.

    python benchmarks/bench_engine.py --scan 128x128 --det 256x256
"""

from __future__ import annotations

import time

import numpy as np
from _common import best, engine_setup

import framescope as fs
import framescope.masks as fm
from framescope.udf import SumFrame


def cases(h: int, w: int) -> dict[str, tuple[str, object]]:
    cy, cx = h // 2, w // 2
    return {
        "1 disk": ("masks", fm.disk(cy, cx, h / 8)),
        "1 ring": ("masks", fm.ring(cy, cx, h * 40 / 256, h * 90 / 256)),
        "16 masks": ("masks", {f"r{i}": fm.ring(cy, cx, i * h / 40, (i + 1) * h / 40 + 1)
                               for i in range(16)}),
        "COM": ("com", None),
        "sum frame": ("sum", None),
    }


def framescope_run(arr, kind: str, spec, client) -> None:
    if kind == "masks":
        arr.fs.virtual_image(spec, client=client, cache=False)
    elif kind == "com":
        arr.fs.com(client=client)
    else:  # not arr.fs.sum_frame(): it keeps the frame, and a repeat would read nothing
        fs.run(SumFrame(), arr, client=client)


def libertem_udf(kind: str, spec, h: int, w: int):
    if kind == "masks":
        from libertem.udf.masks import ApplyMasksUDF

        stack = fm.MaskStack.from_any(spec)
        rasters = [stack[n].rasterize((h, w)) for n in stack.names]
        return ApplyMasksUDF(mask_factories=[lambda m=m: m for m in rasters])
    if kind == "com":
        from libertem.udf.com import CoMUDF

        return CoMUDF.with_params(cy=h // 2, cx=w // 2)
    from libertem.udf.sum import SumUDF

    return SumUDF()


def mask_latency(kept, det: tuple[int, int], client) -> str:
    kept.fs.virtual_image(fm.disk(det[0] // 2, det[1] // 2, 10), client=client, cache=False)
    lat = []
    for r in np.linspace(5, 60, 12):  # each a new mask: nothing cached
        t0 = time.perf_counter()
        kept.fs.virtual_image(fm.disk(det[0] // 2, det[1] // 2, float(r)), client=client,
                              cache=False)
        lat.append(time.perf_counter() - t0)
    return f"median {np.median(lat) * 1e3:.0f} ms, min {min(lat) * 1e3:.0f} ms"


FIRST = {
    "framescope": "import framescope as fs\n"
                  "arr = fs.open({path!r})\n"
                  "arr.fs.virtual_image(fs.masks.ring({cy}, {cx}, {r0}, {r1}), cache=False)\n",
    "libertem": "import libertem.api as lt\n"
                "from libertem.udf.masks import ApplyMasksUDF\n"
                "import numpy as np\n"
                "ctx = lt.Context.make_with('inline')\n"
                "ds = ctx.load('raw', path={path!r}, nav_shape={scan}, sig_shape={det}, "
                "dtype='uint16')\n"
                "y, x = np.ogrid[:{det[0]}, :{det[1]}]\n"
                "r = np.hypot(y - {cy}, x - {cx})\n"
                "m = ((r >= {r0}) & (r < {r1})).astype(np.float32)\n"
                "ctx.run_udf(dataset=ds, udf=ApplyMasksUDF(mask_factories=[lambda: m]))\n",
}


def first_image(path, scan, det, repeat: int) -> str:
    """Seconds from a new interpreter's start to the first complete ring image (best of
    ``repeat``, bytecode caches warm), framescope's defaults and LiberTEM's inline context."""
    import subprocess
    import sys

    cy, cx = det[0] // 2, det[1] // 2
    fields = {"path": str(path), "scan": tuple(scan), "det": tuple(det), "cy": cy, "cx": cx,
              "r0": det[0] * 40 / 256, "r1": det[0] * 90 / 256}
    out = []
    for name, code in FIRST.items():
        script = code.format(**fields)
        times = []
        for _ in range(repeat + 1):  # the first run may compile bytecode: not counted
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", script], capture_output=True)
            times.append(time.perf_counter() - t0)
            if done.returncode:
                times = [float("nan")]
                break
        out.append(f"{name} {min(times[1:] or times):.2f} s")
    bare = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); "
                           "import framescope; print(time.perf_counter()-t)"],
                          capture_output=True, text=True).stdout.strip()
    return ", ".join(out) + f" (import framescope alone {float(bare or 'nan'):.2f} s)"


def main() -> None:
    setup = engine_setup(__doc__)
    args, det, path, arr = setup.args, setup.det, setup.path, setup.arr
    nbytes, t_ceil = arr.nbytes, setup.t_ceil
    client, ctx, lt_ds = setup.client, setup.ctx, setup.lt_ds

    print(f"{path}: {nbytes / 2**30:.2f} GiB uint16, ceiling (plain read) "
          f"{nbytes / t_ceil / 1e9:.2f} GB/s; GB/s = 1e9 bytes/s, best of {args.repeat}")
    assert fs.engine.get_client() == "inline"  # the default: in-process, no cluster
    print(f"{'analysis':<11}{'inline':>9}{'cluster':>9}{'libertem':>9}{'ceiling':>9}"
          f"{'in/ceil':>9}{'cl/in':>7}{'in/LT':>7}")
    for name, (kind, spec) in cases(*det).items():
        framescope_run(arr, kind, spec, "inline")  # warm: JIT cache load, masks
        t_in = best(lambda k=kind, s=spec: framescope_run(arr, k, s, "inline"), args.repeat)
        t_cl = t_lt = float("nan")
        if client is not None:
            framescope_run(arr, kind, spec, client)
            t_cl = best(lambda k=kind, s=spec: framescope_run(arr, k, s, client), args.repeat)
        if ctx is not None:
            udf = libertem_udf(kind, spec, *det)
            ctx.run_udf(dataset=lt_ds, udf=udf)
            t_lt = best(lambda u=udf: ctx.run_udf(dataset=lt_ds, udf=u), args.repeat)
        g = [nbytes / t / 1e9 for t in (t_in, t_cl, t_lt, t_ceil)]
        print(f"{name:<11}{g[0]:>9.2f}{g[1]:>9.2f}{g[2]:>9.2f}{g[3]:>9.2f}"
              f"{g[0] / g[3]:>9.2f}{g[1] / g[0]:>7.2f}{g[0] / g[2]:>7.2f}")

    # 64x64 positions (512 MiB for 256x256 frames) held in memory: in this process (the
    # default) and in the cluster's workers
    small = fs.open(path, chunks=16).isel(scan_y=slice(0, 64), scan_x=slice(0, 64))
    for label, c in (("default (in-process)", None), ("cluster", client)):
        if label == "cluster" and client is None:
            continue
        kept = small.fs.persist(client=c)
        print(f"new mask -> complete image, {label}, {kept.shape} in memory: "
              f"{mask_latency(kept, det, c)}")
    print(f"import -> first ring image of the whole file, new process: "
          f"{first_image(path, setup.scan, det, args.repeat)}")
    if client is not None:
        client.close()
    if ctx is not None:
        ctx.close()


if __name__ == "__main__":
    main()
