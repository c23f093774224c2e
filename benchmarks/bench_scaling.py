"""Per-frame cost from 1 GiB to 20 GiB: does the engine's overhead grow with the data?

A 20 GiB dataset does not fit this machine's page cache, and a disk-bound run would measure
the disk, not framescope. So the larger datasets are Merlin acquisitions of up to ten
``.mib`` files that are hard links to one 2 GiB file: every byte is really read through
the reader and the engine (more partitions, more tasks, a bigger result), while the page
cache holds one copy. The ceiling is a plain read pass over the same files.

    python benchmarks/bench_scaling.py --data-dir /work/data/bench
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from _common import best, plain_read

import framescope as fs
import framescope.masks as fm
from framescope.datasets import synthetic

SIZES_GIB = (1, 2, 5, 10, 20)


def acquisition(data_dir: Path, links: int) -> Path:
    """A .hdr + ``links`` hard-linked copies of one 128x128x256x256 uint16 .mib file."""
    src = data_dir / "128x128_256x256" / "data.mib"
    if not src.exists():
        src.parent.mkdir(parents=True, exist_ok=True)
        fs.io.save(synthetic(scan=(128, 128), det=(256, 256)), src, "mib")
    out = data_dir / "scaling"
    out.mkdir(exist_ok=True)
    for i in range(1, links + 1):
        link = out / f"acq_{i}.mib"
        if not link.exists():
            os.link(src, link)
    hdr = src.with_suffix(".hdr")
    if hdr.exists() and not (out / "acq.hdr").exists():
        shutil.copy(hdr, out / "acq.hdr")
    return out / "acq.hdr"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--client", default="inline", help="inline, local (2 processes) or address")
    args = ap.parse_args()
    logging.getLogger("framescope").setLevel(logging.ERROR)  # .hdr frame-count notes
    hdr = acquisition(Path(args.data_dir), 10)
    client = args.client
    if client == "local":
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=":0", host="127.0.0.1"))
    files = [hdr.parent / "acq_1.mib"]
    plain_read(files)
    t_ceil = best(lambda: plain_read(files), args.repeat)
    ceil = files[0].stat().st_size / t_ceil / 1e9
    cases = {
        "ring": lambda a: a.fs.virtual_image(fm.ring(128, 128, 40, 90), client=client,
                                             cache=False),
        "COM": lambda a: a.fs.com(client=client),
        "sum": lambda a: a.fs.sum_frame(client=client),
    }
    print(f"ceiling (plain read of one 2 GiB file, page cache): {ceil:.2f} GB/s; "
          f"executor {args.client}; µs per frame, GB/s, best of {args.repeat}")
    print(f"{'GiB':>5}{'frames':>9}{'tasks':>7}" + "".join(f"{c:>18}" for c in cases))
    for gib in SIZES_GIB:
        arr = fs.open(hdr, scan=(64 * gib, 128))
        n = arr.shape[0] * arr.shape[1]
        row = f"{gib:>5}{n:>9}{arr.data.npartitions:>7}"
        for fn in cases.values():
            fn(arr)
            t = best(lambda f=fn, a=arr: f(a), args.repeat)
            row += f"{t / n * 1e6:>9.2f}µs{arr.nbytes / t / 1e9:>7.2f}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
