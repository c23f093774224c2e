"""Electron counting of frame stacks, numpy or lazy, partition by partition, with the
detector corrections that keep the pixel grid (dark, offset, gain, bad pixels)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from framescope.counting._counted import CountedData, CountingError
from framescope.counting._kernel import count_block
from framescope.counting._peel import fit_response, peel_block
from framescope.counting._thresholds import Thresholds, thresholds_from_values
from framescope.io._lazy import ReaderArray, source_of

if TYPE_CHECKING:
    import xarray as xr

    from framescope.calibration import Calibration
    from framescope.corrections import Corrections

__all__ = ["count_electrons", "estimate_thresholds"]

_DIMS = ("scan_y", "scan_x", "det_y", "det_x")
# numpy input is counted in blocks of about this many bytes of frames
_BLOCK_BYTES = 64 * 2**20


def _ahead(reads: list[Callable[[], np.ndarray]]) -> Iterator[np.ndarray]:
    """The results of ``reads`` in order, each next one running while the last is used."""
    if not reads:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="framescope-count-read") as pool:
        pending: Future[np.ndarray] = pool.submit(reads[0])
        for i in range(len(reads)):
            block = pending.result()
            if i + 1 < len(reads):
                pending = pool.submit(reads[i + 1])
            yield block


class _Frames:
    """The frames to count: a framescope file array (read straight from its reader, as the
    engine does), a dask array or a numpy array, seen as ``(scan_y, scan_x, det_y,
    det_x)``."""

    def __init__(self, data: Any) -> None:
        import dask.array as da
        import xarray as xr

        self.calibration: Calibration | None = None
        self.source: ReaderArray | None = None
        self.attached: Corrections | None = None  # the array's (arr.fs.with_corrections)
        if isinstance(data, xr.DataArray):
            from framescope.corrections import ENCODING_KEY

            self.attached = data.encoding.get(ENCODING_KEY)
            if set(data.dims) != set(_DIMS):
                from framescope.errors import DimensionError

                raise DimensionError(f"count_electrons: frames must have dims {_DIMS}, found "
                                     f"{data.dims}")
            text = data.attrs.get("calibration")
            if text:
                from framescope.calibration import Calibration

                self.calibration = Calibration.from_json(text)
            if data.dims == _DIMS:
                self.source = source_of(data)
            data = data.transpose(*_DIMS).data
        if not isinstance(data, da.Array):
            data = np.asarray(data)
        if data.ndim == 3:
            data = data.reshape(1, *data.shape)
        if data.ndim != 4:
            raise CountingError(f"count_electrons: frames must be 3D (n, det_y, det_x) or 4D "
                                f"(scan_y, scan_x, det_y, det_x), found shape {data.shape}")
        if np.dtype(data.dtype).kind not in "uif":
            raise CountingError(f"count_electrons: frames must hold real numbers, found dtype "
                                f"{data.dtype}")
        if any(n == 0 for n in data.shape):
            raise CountingError(f"count_electrons: frames are empty, shape {data.shape}")
        self.data = data
        self.scan_shape = (int(data.shape[0]), int(data.shape[1]))
        self.frame_shape = (int(data.shape[2]), int(data.shape[3]))
        self.n_frames = self.scan_shape[0] * self.scan_shape[1]
        self.frame_bytes = math.prod(self.frame_shape) * np.dtype(data.dtype).itemsize

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` frames at random scan positions (all frames when there are fewer)."""
        n = min(int(n), self.n_frames)
        flat = np.sort(np.random.default_rng(seed).choice(self.n_frames, n, replace=False))
        if self.source is not None:
            out = np.empty((n, *self.frame_shape), dtype=self.data.dtype)
            for k, i in enumerate(flat.tolist()):
                self.source.read_positions(i, i + 1, out[k:k + 1])
            return out
        iy, ix = np.unravel_index(flat, self.scan_shape)
        if isinstance(self.data, np.ndarray):
            return self.data[iy, ix]
        import dask.array as da

        # basic slices, fused into the reads of a file-backed array: only these frames
        picked = [self.data[y, x] for y, x in zip(iy.tolist(), ix.tolist(), strict=True)]
        return np.asarray(da.stack(picked).compute())

    def blocks(self) -> Iterator[np.ndarray]:
        """The frames in scan order as C-contiguous ``(frames, det_y, det_x)`` blocks.

        A file is read by blocks of frames into two reused buffers, one filled while the
        other is counted; a dask array one chunk of scan rows at a time (a slice of a chunk
        could compute the whole chunk), the next computed while one is counted; a numpy
        array by blocks of rows.
        """
        per_block = max(1, _BLOCK_BYTES // self.frame_bytes)
        if self.source is not None:
            source, n = self.source, self.n_frames
            size = min(per_block, n)
            buffers = [np.empty((size, *self.frame_shape), dtype=self.data.dtype)
                       for _ in range(2 if n > size else 1)]

            def read(k: int) -> Callable[[], np.ndarray]:
                first = k * size
                stop = min(n, first + size)
                return lambda: source.read_positions(
                    first, stop, buffers[k % len(buffers)][:stop - first])

            yield from _ahead([read(k) for k in range(-(-n // size))])
            return
        if isinstance(self.data, np.ndarray):
            rows = max(1, per_block // self.scan_shape[1])
            for r0 in range(0, self.scan_shape[0], rows):
                block = np.ascontiguousarray(self.data[r0:r0 + rows])
                yield block.reshape(-1, *self.frame_shape)
            return
        data = self.data
        bounds = np.cumsum((0, *data.chunks[0])).tolist()

        def compute(r0: int, r1: int) -> Callable[[], np.ndarray]:
            return lambda: np.ascontiguousarray(data[r0:r1].compute()).reshape(
                -1, *self.frame_shape)

        yield from _ahead([compute(a, b) for a, b in itertools.pairwise(bounds)])


def _dark(dark: Any, frame_shape: tuple[int, int]) -> np.ndarray:
    if dark is None:
        return np.zeros(frame_shape, dtype=np.float32)
    d = np.asarray(dark)
    if d.shape != frame_shape:
        raise CountingError(f"count_electrons: dark must have the frames' shape (det_y, det_x) "
                            f"= {frame_shape}, found {d.shape}")
    if d.dtype.kind not in "uif" or not np.all(np.isfinite(d)):
        raise CountingError(f"count_electrons: dark must hold finite real numbers, found "
                            f"dtype {d.dtype}"
                            + ("" if d.dtype.kind not in "f" else
                               f" with {int((~np.isfinite(d)).sum())} non-finite values"))
    return np.ascontiguousarray(d, dtype=np.float32)


class _Pixels:
    """What counting subtracts and multiplies per pixel: the dark reference (plus the
    offset), the gain with bad pixels at 0 (None: neither), the bad-pixel mask."""

    def __init__(self, frames: _Frames, dark: Any, corrections: Any) -> None:
        c = frames.attached if corrections is None else corrections or None
        self.corrections: Corrections | None = c
        self.gain: np.ndarray | None = None
        self.bad: np.ndarray | None = None
        if c is None:
            self.dark = _dark(dark, frames.frame_shape)
            return
        from framescope.corrections import Corrections

        if not isinstance(c, Corrections):
            raise CountingError(f"count_electrons: corrections: expected a framescope."
                                f"corrections.Corrections, None or False, found "
                                f"{type(c).__name__}")
        c.check(frames.frame_shape)  # CorrectionsError: which array, expected vs found
        grid = {k: v for k, v in (("crop", c.crop), ("bin", c.bin if c.bin > 1 else None),
                                  ("fft_downsample", c.fft_downsample)) if v is not None}
        if grid:
            raise CountingError(f"count_electrons: corrections with {grid} change the pixel "
                                f"grid, and an event is one detector pixel; expected "
                                f"corrections without crop, bin or fft_downsample (count "
                                f"first, then bin the counted frames)")
        if c.threshold is not None:
            raise CountingError(f"count_electrons: corrections with threshold={c.threshold} "
                                f"would zero values before the event rule; counting has its "
                                f"own background_threshold= (expected corrections without "
                                f"threshold)")
        if c.dark is not None and dark is not None:
            raise CountingError("count_electrons: a dark reference in both dark= and the "
                                "corrections; expected one of them")
        self.dark = _dark(c.dark if c.dark is not None else dark, frames.frame_shape)
        if c.offset:
            self.dark = self.dark + np.float32(c.offset)
        if c.gain is not None or c.bad is not None:
            # bad pixels at gain 0: they read 0, never an event, in the same multiply
            self.gain = (np.ones(frames.frame_shape, np.float32) if c.gain is None
                         else c.gain.copy())
            if c.bad is not None:
                self.gain[c.bad] = 0
                self.bad = c.bad

    def values(self, sample: np.ndarray) -> np.ndarray:
        """Corrected values of sampled frames, bad pixels left out (for the thresholds)."""
        v = sample.astype(np.float32) - self.dark
        if self.gain is not None:
            v *= self.gain
        return v if self.bad is None else v[..., ~self.bad]


def _thresholds(frames: _Frames, pixels: _Pixels, background: float | None,
                xray: float | None, k_background: float, k_xray: float, n_samples: int,
                seed: int) -> Thresholds:
    if background is not None and xray is not None:
        return Thresholds(background=float(background), xray=float(xray))
    if int(n_samples) != n_samples or n_samples < 1:
        raise CountingError(f"count_electrons: n_samples must be a positive int, found "
                            f"{n_samples!r}")
    sample = frames.sample(n_samples, seed)
    values = pixels.values(sample)
    return thresholds_from_values(values, k_background=k_background, k_xray=k_xray,
                                  background=background, xray=xray, n_frames=len(sample))


def estimate_thresholds(
    frames: np.ndarray | xr.DataArray,
    *,
    dark: np.ndarray | None = None,
    corrections: Corrections | Literal[False] | None = None,
    k_background: float = 4.0,
    k_xray: float = 10.0,
    n_samples: int = 40,
    seed: int = 0,
) -> Thresholds:
    """Background and X-ray thresholds from the statistics of sampled frames.

    Background: ``noise_mean + k_background * noise_sigma`` of a Gaussian fitted to the noise
    peak of the dark-subtracted values; X-ray: ``mean + k_xray * std`` of all of them (the
    recipe of stempy, with a noise fit that electrons do not widen; see
    :mod:`framescope.counting._thresholds`).

    Parameters
    ----------
    frames : ndarray or DataArray
        ``(n, det_y, det_x)`` or ``(scan_y, scan_x, det_y, det_x)`` frames, numpy or lazy.
    dark : ndarray, optional
        Dark reference of shape ``(det_y, det_x)`` subtracted first.
    corrections : Corrections or False, optional
        As for :func:`count_electrons`: the values are corrected, bad pixels left out.
    k_background, k_xray : float
        Multipliers of the noise sigma and of the overall standard deviation.
    n_samples : int
        Frames sampled at random scan positions (only these are read).
    seed : int
        Seed of the sample.

    Returns
    -------
    Thresholds

    Raises
    ------
    CountingError
        Frames of the wrong rank or dtype, a dark reference of the wrong shape, inverted
        thresholds.
    """
    f = _Frames(frames)
    return _thresholds(f, _Pixels(f, dark, corrections), None, None, k_background, k_xray,
                       n_samples, seed)


def count_electrons(
    frames: np.ndarray | xr.DataArray,
    *,
    dark: np.ndarray | None = None,
    corrections: Corrections | Literal[False] | None = None,
    background_threshold: float | None = None,
    xray_threshold: float | None = None,
    k_background: float = 4.0,
    k_xray: float = 10.0,
    n_samples: int = 40,
    centroids: bool = False,
    seed: int = 0,
    method: Literal["maxima", "fit"] = "maxima",
    electron: float | None = None,
    blur: float | None = None,
) -> CountedData:
    """Count electrons: events are local maxima between the background and X-ray thresholds,
    or (``method="fit"``) electrons fitted and subtracted one by one.

    Each frame is dark-subtracted (float32), and corrected by the gain and bad pixels of
    ``corrections``; a pixel whose value lies strictly between the thresholds and is a
    maximum of its 8-neighbourhood (ties go to the first pixel in raster order) is one
    electron. Frames are counted block by block, the next block read while one
    is counted: an array opened by :func:`framescope.open` straight from its reader (64 MiB
    of frames at a time, two reused buffers), another lazy array one dask chunk of scan
    rows at a time (chunks along ``scan_x`` or the detector joined). Only the sparse result
    is kept.

    Parameters
    ----------
    frames : ndarray or DataArray
        ``(n, det_y, det_x)`` (counted as a ``1 x n`` scan) or ``(scan_y, scan_x, det_y,
        det_x)`` frames of any real dtype; a DataArray (numpy or dask backed) with framescope
        dims, whose ``attrs["calibration"]`` is carried over.
    dark : ndarray, optional
        Dark reference ``(det_y, det_x)`` (e.g. the mean of dark frames); none subtracted by
        default.
    corrections : Corrections or False, optional
        Detector corrections applied in the counting pass: ``(frame - dark - offset) *
        gain``, bad pixels 0 whatever ``bad_fill`` says (they never hold an event, and their
        neighbours are compared with 0); the thresholds are estimated on the corrected
        values of the good pixels. Default: those attached to a DataArray
        (``arr.fs.with_corrections``); False: none. Its dark and ``dark=`` are exclusive.
        Corrections that change the pixel grid (crop, bin, fft_downsample) or zero values
        (threshold) are refused.
    background_threshold, xray_threshold : float, optional
        Thresholds in ADU above the dark reference; each one not given is estimated from
        ``n_samples`` sampled frames (see :func:`estimate_thresholds`).
    k_background, k_xray : float
        Multipliers for estimated thresholds (4 and 10 noise sigmas, stempy's defaults).
    n_samples : int
        Frames sampled for the estimate.
    centroids : bool
        Also compute each event's intensity-weighted centroid over its 3x3 neighbourhood
        (``method="fit"``: its fitted position).
    seed : int
        Seed of the sampled frames.
    method : {"maxima", "fit"}
        ``"maxima"``: the local-maximum rule above. ``"fit"``: charge clouds of ``electron``
        ADU and width ``blur`` are fitted and subtracted one at a time, so two electrons in
        neighbouring pixels (or one pixel) are two events (see
        :mod:`framescope.counting._peel`); a pixel may then appear twice in a frame. It
        finds 98 % of the electrons at 0.1 e-/px where local maxima find about half, at
        roughly 500 times the cost (docs/counting.md). It leaves out pixels above the X-ray
        threshold and all within 2 px of them; the background threshold is estimated and
        stored but not used.
    electron : float, optional
        Mean signal of one electron in ADU (of the corrected values); required by
        ``method="fit"``. :func:`~framescope.counting.estimate_response` measures it (and
        ``blur``) on low-dose frames (<= ~0.05 e-/px) of the same detector.
    blur : float, optional
        Standard deviation of an electron's charge cloud, px; required by
        ``method="fit"``.

    Returns
    -------
    CountedData
        Offsets and pixel indices per frame (and centroids), the thresholds used and the
        calibration.

    Raises
    ------
    CountingError
        Frames of the wrong rank or dtype, a dark reference of the wrong shape or with
        non-finite values, inverted thresholds, corrections that change the pixel grid or
        threshold, a dark in both ``dark=`` and the corrections, an unknown ``method``,
        ``electron`` or ``blur`` missing or not a positive number with ``method="fit"`` (or
        given without it).
    framescope.corrections.CorrectionsError
        Correction arrays of another shape than the frames.
    framescope.errors.DimensionError
        A DataArray without the ``(scan_y, scan_x, det_y, det_x)`` dims.

    Examples
    --------
    >>> from framescope.datasets import lowdose
    >>> ds = lowdose(scan=(4, 4), det=(32, 32), dose=0.01, seed=2)
    >>> counted = count_electrons(ds.frames, dark=ds.dark_frames(64).mean(axis=0))
    >>> counted.events_per_frame.shape
    (4, 4)
    """
    response = fit_response("count_electrons", method, electron, blur)
    f = _Frames(frames)
    h, w = f.frame_shape
    if h * w > 2**32:
        raise CountingError(f"count_electrons: frames of {h}x{w} px exceed uint32 pixel "
                            f"indices")
    px = _Pixels(f, dark, corrections)
    thresholds = _thresholds(f, px, background_threshold, xray_threshold, k_background,
                             k_xray, n_samples, seed)
    counts, indices, cents = [], [], []
    for block in f.blocks():
        if response is None:
            c, i, xy = count_block(block, px.dark, thresholds.background, thresholds.xray,
                                   centroids, px.gain)
        else:
            c, i, xy = peel_block(block, px.dark, px.gain, electron=response[0],
                                  blur=response[1], xray=thresholds.xray,
                                  centroids=centroids)
        counts.append(c)
        indices.append(i)
        if xy is not None:
            cents.append(xy)
    offsets = np.zeros(f.n_frames + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=offsets[1:])
    return CountedData(
        scan_shape=f.scan_shape, frame_shape=f.frame_shape, offsets=offsets,
        indices=np.concatenate(indices), centroids=np.concatenate(cents) if centroids else None,
        thresholds=thresholds, calibration=f.calibration,
    )
