"""Virtual images on counted electrons: sparse event kernels beside the dense frames.

Simulates ``framescope.datasets.lowdose`` frames once (uint16, default 128x128 scan of 256x256
frames at 0.1 e-/px, no X-rays) into a raw file under --data-dir, counts them with
``count_electrons`` (dark reference: the mean of 64 dark frames) and saves the events in
stempy's sparse HDF5 layout beside it. With both files opened (the events are read once, on
opening) and in the page cache, prints frames/s, best of --repeat, on the default executor
(a thread per core), for:

- ceiling: a plain ``readinto`` pass over the dense raw file into a reused 4 MiB buffer;
- dense: the analysis on the raw frames (``fs.open(raw)``, the fused dense kernels);
- sparse: the same analysis on the counted file (``fs.open(counted.h5)``: tiles of events,
  the event kernels of ``framescope.udf._sparse``; single-valued masks on frames the
  reader keeps as bit planes by AND and popcount, ``framescope.udf._bits``);
- events: the counted file without bit planes (``read_bits`` hidden): every virtual
  detector through the event kernels (COM and sum frames always go there);
- densified: the counted file with its reader's events hidden, so every tile is densified
  into frames of counts first (the path before the event kernels);

for a ring (r 40-90 px of 256), the centre of mass and the sum frame. GB/s count the bytes
of the dense frames (2 per pixel) for every row, so rows compare per scan.

    python benchmarks/bench_sparse.py --scan 128x128 --det 256x256 --dose 0.1

The rows of each analysis alternate round after round (--repeat rounds); each prints its
best and median frames/s, and its ratio to the dense row is the median of the per-round
ratios, which a change of load on a shared machine moves least.

Simulating and counting 128x128 frames takes ~2 min on 2 cores and 2 GiB of memory.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import best, plain_read

import framescope as fs
import framescope.masks as fm
from framescope.counting import count_electrons, save_counted
from framescope.datasets import lowdose
from framescope.io._counted import CountedReader
from framescope.io._lazy import to_dataarray
from framescope.udf import ApplyMasks, CenterOfMass, SumFrame


class DensifyingReader(CountedReader):
    """The counted file without ``read_events``: the engine densifies every tile."""

    read_events = None


class EventsReader(CountedReader):
    """The counted file without ``read_bits``: virtual detectors run the event kernels."""

    read_bits = None


def simulate(path: Path, scan: tuple[int, int], det: tuple[int, int], dose: float) -> None:
    t0 = time.perf_counter()
    ds = lowdose(scan=scan, det=det, dose=dose, seed=0)
    fs.io.save(ds.to_dataarray(chunks=8), path / "data.raw", "raw", progress=False)
    counted = count_electrons(ds.frames, dark=ds.dark_frames(64).mean(axis=0))
    save_counted(counted, path / "counted.h5", overwrite=True)
    print(f"simulated and counted in {time.perf_counter() - t0:.1f} s")


def udfs(h: int, w: int) -> dict[str, object]:
    return {"ring": ApplyMasks(fm.ring(h // 2, w // 2, h * 40 / 256, h * 90 / 256)),
            "COM": CenterOfMass(radius=h * 90 / 256), "sum": SumFrame()}


def analysis(arr, udf) -> None:
    # fs.run, not the accessor: a repeated accessor call may come from its result cache
    fs.run(udf, arr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", default="128x128")
    ap.add_argument("--det", default="256x256")
    ap.add_argument("--dose", type=float, default=0.1)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    scan = tuple(int(v) for v in args.scan.split("x"))
    det = tuple(int(v) for v in args.det.split("x"))
    path = Path(args.data_dir) / f"lowdose_{args.scan}_{args.det}_{args.dose}"
    path.mkdir(parents=True, exist_ok=True)
    raw, counted_path = path / "data.raw", path / "counted.h5"
    if not counted_path.exists():
        simulate(path, scan, det, args.dose)

    dense = fs.open(raw)
    sparse = fs.open(counted_path)
    densified = to_dataarray(DensifyingReader(str(counted_path)))
    by_events = to_dataarray(EventsReader(str(counted_path)))
    n = scan[0] * scan[1]
    events = sparse.attrs["events"]
    nbytes = dense.nbytes
    # the events as the reader holds them in memory (uint16 on detectors of <= 65536 px)
    size = CountedReader(str(counted_path))._loaded()[1].dtype
    print(f"{raw}: {n} frames of {det[0]}x{det[1]} uint16 ({nbytes / 2**30:.2f} GiB, "
          f"{2 * det[0] * det[1] / 1024:.0f} KiB/frame); {counted_path.name}: {events} events "
          f"({events / n / (det[0] * det[1]):.3f} per px, "
          f"{size.itemsize * events / n / 1024:.1f} KiB/frame of {size} indices: "
          f"{size.itemsize * events / nbytes:.3f} of the dense bytes), file "
          f"{os.path.getsize(counted_path) / 2**20:.1f} MiB; load average "
          f"{os.getloadavg()[0]:.1f}")
    plain_read([raw])
    rows = []
    for kind, udf in udfs(*det).items():
        # warm: numba kernels loaded, pages mapped, the events read (and the bit planes built)
        for arr in (dense, sparse, by_events, densified):
            analysis(arr, udf)
        t_ceil = best(lambda: plain_read([raw]), args.repeat)
        # the rows alternate, round after round, so that a change of load on this shared
        # machine hits all of them alike; the median of the per-round ratios is the figure
        arrs = {"dense": dense, "sparse": sparse, "events": by_events, "densified": densified}
        t: dict[str, list[float]] = {name: [] for name in arrs}
        for _ in range(args.repeat):
            for name, arr in arrs.items():
                t[name].append(timed(lambda a=arr, u=udf: analysis(a, u)))
        rows.append((kind, t_ceil, {k: np.array(v) for k, v in t.items()}))

    print("frames/s best of the rounds (median); / dense: median of the per-round ratios")
    print(f"{'analysis':<10}{'row':<11}{'frames/s':>20}{'GB/s':>8}{'/ceiling':>10}"
          f"{'/dense':>8}")
    for kind, t_ceil, t in rows:
        print(f"{kind:<10}{'ceiling':<11}{n / t_ceil:>20.0f}{nbytes / t_ceil / 1e9:>8.2f}"
              f"{1.0:>10.2f}{float(np.median(t['dense'])) / t_ceil:>8.2f}")
        for name, secs in t.items():
            rate = f"{n / secs.min():.0f} ({n / np.median(secs):.0f})"
            print(f"{'':<10}{name:<11}{rate:>20}{nbytes / secs.min() / 1e9:>8.2f}"
                  f"{t_ceil / secs.min():>10.2f}{np.median(t['dense'] / secs):>8.2f}")
    ring = rows[0][2]
    ratio = {k: float(np.median(ring["dense"] / ring[k])) for k in ring}
    print(f"ring, sparse / dense: {ratio['sparse']:.1f}x (rounds: "
          f"{', '.join(f'{r:.1f}' for r in ring['dense'] / ring['sparse'])}); events / dense: "
          f"{ratio['events']:.1f}x; sparse / densified: "
          f"{ratio['sparse'] / ratio['densified']:.0f}x; load average {os.getloadavg()[0]:.1f}")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
