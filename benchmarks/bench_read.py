"""Read throughput of every reader, beside a plain read of the same bytes and LiberTEM.

Writes a synthetic dataset once in each format (cached under --data-dir), warms the page
cache, then times, best of --repeat:

- ceiling: a plain ``readinto`` pass over the format's files into a reused 4 MiB buffer;
- framescope reader: ``read_positions`` of ~4 MiB tiles into one reused buffer (1 thread),
  what the engine's tasks do;
- framescope dask: every partition of the lazy DataArray computed by dask's threaded
  scheduler (2 threads), what a plain ``arr.compute()``-style user pays;
- LiberTEM (peer, same files, same run): a UDF that copies each tile into a scratch buffer
  (so every byte is read, as LiberTEM's own NoOpUDF on memory-mapped files touches none), on
  ``Context.make_with("dask", cpus=2)``.

GB/s are decoded frame bytes per second; for compressed formats the ceiling reads fewer
(file) bytes, shown in the "file MB" column.

    python benchmarks/bench_read.py --scan 64x64 --det 256x256
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import dask
import numpy as np
from _common import best, plain_read

import framescope
from framescope.datasets import synthetic
from framescope.io._export import save

FORMATS = {
    # name: (writer format, file name, writer options)
    "raw": ("raw", "data.raw", {}),
    "npy": ("npy", "data.npy", {}),
    "hdf5": ("hdf5", "data.h5", {}),
    "hdf5-bslz4": ("hdf5", "data_bslz4.h5", {"compression": "bslz4"}),
    "zarr": ("zarr", "data.zarr", {}),
    "mib": ("mib", "data.mib", {}),
    "dectris-bslz4": ("dectris", "data_master.h5", {"compression": "bslz4"}),
}


def files_of(path: Path) -> list[Path]:
    """The files holding a dataset's bytes (Zarr chunks, DECTRIS master + data files)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.name.endswith("_master.h5"):
        prefix = path.name.removesuffix("_master.h5")
        return [path, *sorted(path.parent.glob(f"{prefix}_data_*.h5"))]
    return [path]


def reader_pass(arr) -> None:
    source = arr.encoding["framescope_source"]
    ny, nx, h, w = arr.shape
    per = max(1, 4 * 2**20 // (h * w * arr.dtype.itemsize))
    buf = np.empty((per, h, w), arr.dtype)
    n = ny * nx
    for start in range(0, n, per):
        stop = min(start + per, n)
        source.read_positions(start, stop, buf[: stop - start])


def dask_pass(arr) -> None:
    touched = arr.data.map_blocks(lambda b: b[:1, :1, :1, :1], chunks=(1, 1, 1, 1))
    with dask.config.set(scheduler="threads", num_workers=2):
        touched.compute()


def copy_udf():
    """A LiberTEM UDF that reads every byte: copy each tile into a per-task scratch buffer."""
    from libertem.udf.base import UDF

    class CopyUDF(UDF):
        def get_result_buffers(self):
            return {"n": self.buffer(kind="single", dtype="int64")}

        def process_tile(self, tile):
            scratch = getattr(self, "_scratch", None)
            if scratch is None or scratch.size < tile.size or scratch.dtype != tile.dtype:
                scratch = self._scratch = np.empty(tile.size, tile.dtype)
            np.copyto(scratch[: tile.size].reshape(tile.shape), tile)
            self.results.n[:] += tile.shape[0]

        def merge(self, dest, src):
            dest.n[:] += src.n

    return CopyUDF()


def libertem_loader(ctx, name: str, path: Path, arr):
    ny, nx, h, w = arr.shape
    if name == "raw":
        return ctx.load("raw", path=str(path), nav_shape=(ny, nx), sig_shape=(h, w),
                        dtype=arr.dtype.name)
    if name == "npy":
        return ctx.load("npy", path=str(path))
    if name.startswith("hdf5"):
        return ctx.load("hdf5", path=str(path), ds_path=arr.attrs.get("dataset", "/data/frames"))
    if name == "mib":
        return ctx.load("mib", path=str(path), nav_shape=(ny, nx))
    return None  # LiberTEM 0.16 has no Zarr reader and no DECTRIS master-file reader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", default="64x64")
    ap.add_argument("--det", default="256x256")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-libertem", action="store_true")
    args = ap.parse_args()
    scan = tuple(int(v) for v in args.scan.split("x"))
    det = tuple(int(v) for v in args.det.split("x"))
    root = Path(args.data_dir) / f"{args.scan}_{args.det}"
    root.mkdir(parents=True, exist_ok=True)
    source = synthetic(scan=scan, det=det, dtype="uint16")

    ctx = None
    if not args.no_libertem:
        try:
            import libertem.api as lt

            ctx = lt.Context.make_with("dask", cpus=2)
        except ImportError:
            print("libertem not installed: pip install 'framescope[bench]'")

    print(f"dataset {args.scan} x {args.det} uint16, {source.nbytes / 2**30:.2f} GiB, "
          f"{os.cpu_count()} cpus; GB/s = 1e9 decoded bytes/s, best of {args.repeat}")
    head = (f"{'format':<14}{'file MB':>9}{'ceiling':>9}{'fs read':>9}{'fs dask':>9}"
            f"{'libertem':>9}{'fs/ceil':>9}{'fs/LT':>7}")
    print(head)
    for name in args.formats.split(","):
        fmt, fname, opts = FORMATS[name]
        path = root / fname
        if not path.exists():
            save(source, path, fmt, progress=False, **opts)
        arr = framescope.open(path)
        files = files_of(path)
        file_bytes = sum(f.stat().st_size for f in files)
        plain_read(files)  # warm the page cache
        nbytes = arr.nbytes
        t_ceil = best(lambda files=files: plain_read(files), args.repeat)
        t_read = best(lambda arr=arr: reader_pass(arr), args.repeat)
        t_dask = best(lambda arr=arr: dask_pass(arr), args.repeat)
        lt_gbs = float("nan")
        if ctx is not None:
            ds = libertem_loader(ctx, name, path, arr)
            if ds is not None:
                udf = copy_udf()
                try:
                    ctx.run_udf(dataset=ds, udf=udf)
                    t_lt = best(lambda ds=ds, udf=udf: ctx.run_udf(dataset=ds, udf=udf),
                                args.repeat)
                    lt_gbs = nbytes / t_lt / 1e9
                except Exception as e:  # the peer failing is a finding, not our crash
                    print(f"  libertem failed on {name}: {type(e).__name__}: {e}")
        ceil_gbs = file_bytes / t_ceil / 1e9
        read_gbs = nbytes / t_read / 1e9
        print(f"{name:<14}{file_bytes / 1e6:>9.0f}{ceil_gbs:>9.2f}{read_gbs:>9.2f}"
              f"{nbytes / t_dask / 1e9:>9.2f}{lt_gbs:>9.2f}{read_gbs / ceil_gbs:>9.2f}"
              f"{read_gbs / lt_gbs:>7.2f}")
    if ctx is not None:
        ctx.close()


if __name__ == "__main__":
    main()
