"""Electron counting of low-dose frames: framescope beside the read ceiling and stempy.

Simulates ``framescope.datasets.lowdose`` frames once (uint16, default 64x64 scan of
256x256 frames at 0.05 e-/px, no X-rays) into a raw file under --data-dir, with a dark
reference (mean of 64 dark frames) and, for stempy's reader, an HDF5 copy. With the files
in the page cache, prints frames/s and GB/s (1e9 bytes of frames per second), best of
--repeat, for:

- ceiling: a plain ``readinto`` pass over the raw file into a reused 4 MiB buffer, timed
  beside every row (on a shared machine the ratio to it is the stable figure);
- framescope lazy: ``count_electrons(fs.open(raw), dark=...)`` with thresholds estimated from
  40 sampled frames, the file read one dask chunk of scan rows ahead of the counting;
- framescope memmap: the same on a numpy memmap of the file;
- framescope 1 thread: the memmap with the thresholds given, numba on one thread (the
  kernel like for like with stempy's single-threaded per-frame call);
- stempy count_frame: stempy's per-frame kernel (``electron_count_frame``) with the dark
  reference and the thresholds framescope found, over the memmap, one call per frame;
- framescope fit: ``count_electrons(method="fit")`` (pile-ups resolved) with the
  simulation's electron signal and blur, on the first --fit-frames frames only (it costs
  hundreds of times more per pixel), with the events it finds per true electron beside
  the local maxima's on the same frames.

stempy's whole pipeline (``electron_count``) reads frames only through its 4D Camera
readers or, from HDF5, a deprecated ``PyReader`` path that crashes (segfault) after the
thresholds in stempy 3.6 (stempy issues #138, #219, #259). Its threshold step alone is
timed beside framescope's: 40 frames sampled from the first 64 (stempy: blocks in memory,
without the dark reference, whose path fails in 3.6 with "cannot create std::vector larger
than max_size()").

Before timing, both count the first frames with a whole-ADU dark reference (stempy truncates
a fractional one) and must agree on all but tie-broken events. Also printed: the counted data's
size against the frames' and the size of the sparse HDF5 file.

    python benchmarks/bench_counting.py --scan 64x64 --det 256x256 --dose 0.05
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from _common import best, plain_read

import framescope as fs
from framescope.counting import count_electrons, estimate_thresholds, save_counted
from framescope.datasets import lowdose


def simulate(path: Path, scan: tuple[int, int], det: tuple[int, int], dose: float) -> None:
    ds = lowdose(scan=scan, det=det, dose=dose, seed=0)
    fs.io.save(ds.to_dataarray(chunks=8), path / "data.raw", "raw", progress=False)
    np.save(path / "dark.npy", ds.dark_frames(64).mean(axis=0))
    np.save(path / "truth_offsets.npy", ds.offsets)


def h5_copy(path: Path, frames: np.ndarray, scan: tuple[int, int]) -> Path:
    """The frames as stempy's HDF5 reader wants them: /frames (n, h, w), scan (x, y)."""
    import h5py

    out = path / "frames.h5"
    if not out.exists():
        with h5py.File(out, "w") as f:
            f.create_dataset("frames", data=frames).attrs["scan_dimensions"] = scan[::-1]
    return out


def agree(frames: np.ndarray, dark: np.ndarray, n: int = 64) -> tuple[int, int]:
    """Events of the first ``n`` frames found by both / by one only (whole-ADU dark)."""
    from stempy import image

    whole = np.floor(dark).astype(np.float32)
    ours = count_electrons(frames[:n], dark=whole)
    t = ours.thresholds
    both = one = 0
    for i in range(n):
        theirs = np.asarray(image.electron_count_frame(
            frames[i], darkreference=whole, background_threshold=t.background,
            xray_threshold=t.xray).data[0, 0])
        both += len(np.intersect1d(ours.events(i), theirs))
        one += len(np.setxor1d(ours.events(i), theirs))
    return both, one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", default="64x64")
    ap.add_argument("--det", default="256x256")
    ap.add_argument("--dose", type=float, default=0.05)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent / "data"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-stempy", action="store_true")
    ap.add_argument("--fit-frames", type=int, default=64)
    args = ap.parse_args()
    scan = tuple(int(v) for v in args.scan.split("x"))
    det = tuple(int(v) for v in args.det.split("x"))
    path = Path(args.data_dir) / f"lowdose_{args.scan}_{args.det}_{args.dose:g}"
    raw = path / "data.raw"
    if not raw.exists():
        path.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        simulate(path, scan, det, args.dose)
        print(f"simulated in {time.perf_counter() - t0:.1f} s")
    dark = np.load(path / "dark.npy")
    n_true = int(np.load(path / "truth_offsets.npy")[-1])
    frames = np.memmap(raw, dtype="uint16", mode="r").reshape(-1, *det)
    n, nbytes = frames.shape[0], frames.nbytes
    arr = fs.open(raw)
    plain_read([raw])

    stempy = None
    if not args.no_stempy:
        try:
            from stempy import image as stempy_image
            from stempy import io as stempy_io

            stempy = stempy_image, stempy_io
        except ImportError:
            print("stempy not installed: pip install 'framescope[bench]'")

    def lazy():
        return count_electrons(arr, dark=dark)

    def memmap():
        return count_electrons(frames, dark=dark)

    def one_thread():
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            given = counted.thresholds
            return count_electrons(frames, dark=dark, background_threshold=given.background,
                                   xray_threshold=given.xray)
        finally:
            numba.set_num_threads(before)

    counted = lazy()
    n_fit = min(n, args.fit_frames)

    def fit():
        return count_electrons(frames[:n_fit], dark=dark, method="fit", electron=160.0,
                               blur=0.7, xray_threshold=counted.thresholds.xray)

    rows = {"framescope lazy": lazy, "framescope memmap": memmap,
            "framescope 1 thread": one_thread}
    if stempy is not None:
        import h5py

        stempy_image, stempy_io = stempy
        h5 = h5_copy(path, frames, scan)
        both, one = agree(frames, dark)
        print(f"agreement with stempy on {min(64, n)} frames (whole-ADU dark): {both} events "
              f"in both, {one} in one only (ties, which stempy drops)")
        found = counted.thresholds
        dark32 = dark.astype(np.float32)

        def stempy_frames():
            for i in range(n):
                stempy_image.electron_count_frame(frames[i], darkreference=dark32,
                                                  background_threshold=found.background,
                                                  xray_threshold=found.xray)

        rows["stempy count_frame"] = stempy_frames
        with h5py.File(h5, "r") as f:
            reader = stempy_io.reader(f)
            blocks = [next(reader)._block for _ in range(min(2, -(-n // 32)))]
        from stempy import _image

        t_theirs = best(lambda: _image.calculate_thresholds(blocks, 40, 4.0, 10.0), 3)
        t_ours = best(lambda: estimate_thresholds(frames[:64], dark=dark), 3)
        print(f"thresholds from 40 of 64 frames: framescope {t_ours * 1e3:.0f} ms, stempy "
              f"{t_theirs * 1e3:.0f} ms")

    out = path / "counted.h5"
    save_counted(counted, out, overwrite=True)
    print(f"{raw}: {n} frames of {det[0]}x{det[1]} uint16 ({nbytes / 2**30:.2f} GiB), "
          f"{args.dose:g} e-/px ({n_true} electrons, {counted.n_events} events); "
          f"{os.cpu_count()} CPUs; best of {args.repeat}; GB/s = 1e9 bytes/s")
    print(f"counted: {counted.nbytes / 2**20:.1f} MiB in memory "
          f"({nbytes / counted.nbytes:.0f}x smaller), sparse HDF5 "
          f"{out.stat().st_size / 2**20:.1f} MiB ({nbytes / out.stat().st_size:.0f}x)")
    rows[f"framescope fit ({n_fit} fr)"] = fit
    print(f"{'row':<24}{'frames/s':>10}{'GB/s':>8}{'ceiling':>9}{'/ceiling':>9}")
    results = {}
    for name, fn in rows.items():
        t_ceil = best(lambda: plain_read([raw]), args.repeat)
        fn()  # warm: JIT cache, page cache
        t = best(fn, args.repeat)
        results[name] = t
        k = n_fit if name.startswith("framescope fit") else n
        t_ceil *= k / n
        print(f"{name:<24}{k / t:>10.0f}{nbytes * k / n / t / 1e9:>8.2f}"
              f"{nbytes / t_ceil * k / n / 1e9:>9.2f}{t_ceil / t:>9.3f}")
    true_fit = int(np.load(path / "truth_offsets.npy")[n_fit])
    fitted = fit().n_events
    print(f"first {n_fit} frames: {true_fit} true electrons; events found: local maxima "
          f"{int(counted.offsets[n_fit])} ({counted.offsets[n_fit] / true_fit:.3f}), fit "
          f"{fitted} ({fitted / true_fit:.3f})")
    if "stempy count_frame" in results:
        for name in ("framescope lazy", "framescope 1 thread"):
            print(f"{name} / stempy count_frame: "
                  f"{results['stempy count_frame'] / results[name]:.2f}x")


if __name__ == "__main__":
    main()
