"""Electron counting as a UDF: live streams counted as frames arrive, through the engine.

:class:`CountEvents` runs the counting kernel of :func:`count_electrons` on every tile the
engine hands it (the frames after the job's corrections: on a stream with a dark series,
dark-subtracted with the dark series' mean and with bad pixels zeroed). It publishes what a
display needs while the run goes on (events per frame, the counted sum frame, virtual images
of the counted data) and, on a stream job in this process, writes every frame's events to a
file in stempy's sparse layout as they are counted (:class:`CountedWriter`), one file per
series, that :func:`load_counted` and :func:`framescope.open` read back.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from framescope.counting._counted import CountingError
from framescope.counting._hdf5 import VERSION
from framescope.counting._kernel import count_block
from framescope.counting._peel import fit_response, peel_block
from framescope.counting._thresholds import Thresholds
from framescope.udf._base import UDF, Buffer, Meta, Tile

__all__ = ["NO_XRAY", "CountEvents", "CountedWriter"]

log = logging.getLogger(__name__)

#: the X-ray threshold that rejects nothing (the largest float32: Thresholds are finite)
NO_XRAY = float(np.finfo(np.float32).max)


class CountedWriter:
    """Events of a scan written position by position into stempy's sparse HDF5 layout.

    The file holds every dataset of :func:`save_counted`'s layout from the start
    (``/electron_events/frames`` with an empty event list for every scan position); each
    :meth:`write` fills the positions it is given, and :meth:`close` adds the thresholds and
    calibration to ``/metadata``. Positions never written stay empty.

    Parameters
    ----------
    path : str or PathLike
        The file to create.
    scan_shape, frame_shape : (int, int)
    overwrite : bool
        Replace an existing file (otherwise that is an error).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """

    def __init__(self, path: str | os.PathLike[str], scan_shape: tuple[int, int],
                 frame_shape: tuple[int, int], *, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: exists; pass overwrite=True to replace it")
        self.scan_shape, self.frame_shape = tuple(scan_shape), tuple(frame_shape)
        n = self.scan_shape[0] * self.scan_shape[1]
        self._file = h5py.File(self.path, "w")
        self._file.attrs["version"] = VERSION
        group = self._file.create_group("electron_events")
        positions = group.create_dataset("scan_positions", data=np.arange(n))
        positions.attrs["Nx"] = self.scan_shape[1]
        positions.attrs["Ny"] = self.scan_shape[0]
        self._frames = group.create_dataset("frames", (n,), dtype=h5py.vlen_dtype(np.uint32))
        self._frames.attrs["Nx"] = self.frame_shape[0]  # stempy's frame Nx is the row axis
        self._frames.attrs["Ny"] = self.frame_shape[1]
        self._file.create_group("metadata")
        self.frames_written = 0
        self.events_written = 0

    def write(self, positions: np.ndarray, counts: np.ndarray, indices: np.ndarray) -> None:
        """The events of frames at flat scan ``positions``: ``counts[i]`` of them each,
        concatenated in ``indices`` (as :func:`count_block` returns them)."""
        positions = np.asarray(positions, dtype=np.int64)
        if not len(positions):
            return
        events = np.empty(len(positions), dtype=object)
        events[:] = np.split(np.asarray(indices, np.uint32), np.cumsum(counts)[:-1])
        order = np.argsort(positions, kind="stable")
        positions, events = positions[order], events[order]
        # one HDF5 write per run of consecutive positions (a raster batch is one run)
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(positions)], strict=True):
            self._frames[positions[a]:positions[b - 1] + 1] = events[a:b]
        self.frames_written += len(positions)
        self.events_written += int(np.sum(counts))

    def close(self, thresholds: Thresholds | None = None, calibration: Any = None) -> None:
        """Add the metadata and close the file (complete and readable afterwards)."""
        if self._file is None:
            return
        meta = self._file["metadata"]
        if thresholds is not None:
            meta.attrs["framescope_thresholds"] = thresholds.to_json()
        if calibration is not None:
            meta.attrs["calibration"] = calibration.to_json()
        self._file.close()
        self._file = None

    @property
    def closed(self) -> bool:
        return self._file is None


class CountEvents(UDF):
    """Count electrons in every frame the engine hands over (files or live streams).

    The event rule is :func:`count_electrons`'s (the same kernels): a pixel whose value lies
    strictly between the background and X-ray thresholds and is a local maximum of its
    8-neighbourhood (ties to the first in raster order), or with ``method="fit"`` the
    electrons of charge clouds fitted and subtracted one by one (pile-ups resolved; no
    background threshold needed). Values are those the UDF sees: on a
    stream with a dark series (:meth:`framescope.live.ZMQSource.take_dark`), or with
    ``corrections=`` given to the run, the frames are already dark-subtracted and their bad
    pixels zeroed; ``dark=`` subtracts a dark here instead.

    Parameters
    ----------
    background : float, optional
        Background threshold (above the dark). None: from the stream's dark series,
        ``k_background`` times the median per-pixel standard deviation of its good pixels
        (the read noise); only on a stream job that took a dark.
    xray : float, optional
        X-ray threshold; None rejects nothing (:data:`NO_XRAY`).
    k_background : float
        Noise sigmas of the background threshold from the dark.
    dark : array-like (det_y, det_x), optional
        Subtracted before counting (not with a stream's dark series, which is subtracted
        already).
    masks : MaskStack, dict or list of masks, optional
        Virtual detectors on the counted data: ``intensity`` (events inside each mask per
        frame, weighted by the mask).
    out : str or PathLike, optional
        Stream jobs in this process (one receiver): write each series' events to this file
        as they are counted, in stempy's sparse HDF5 layout (:func:`load_counted`,
        :func:`framescope.open`). ``{series}`` in the name is replaced by the series id;
        without it a second series fails on the existing file unless ``overwrite``.
    overwrite : bool
        Replace existing files.
    method : {"maxima", "fit"}
        The event rule, as for :func:`count_electrons`.
    electron, blur : float, optional
        ``method="fit"`` only, and then required: the mean signal of one electron (ADU of
        the values the UDF sees) and the standard deviation of its charge cloud (px).

    Notes
    -----
    Results: ``events`` (nav, int64: events per frame, the virtual image of the whole
    detector), ``counts`` (sig, float64: the counted sum frame), and ``intensity`` (nav,
    one per mask) with ``masks``. After each series, :attr:`thresholds` and :attr:`path`
    say what was used and written.

    Examples
    --------
    >>> job = fs.submit({"count": CountEvents(xray=2000, out="counted_{series}.h5")},
    ...                 source)  # doctest: +SKIP
    >>> job.partial()["count"]["counts"].plot()  # the counted sum frame so far  # doctest: +SKIP
    """

    def __init__(self, *, background: float | None = None, xray: float | None = None,
                 k_background: float = 4.0, dark: Any = None, masks: Any = None,
                 out: str | os.PathLike[str] | None = None, overwrite: bool = False,
                 method: Literal["maxima", "fit"] = "maxima", electron: float | None = None,
                 blur: float | None = None) -> None:
        self.method = method
        self.response = fit_response("CountEvents", method, electron, blur)
        self.background = None if background is None else float(background)
        self.xray = NO_XRAY if xray is None else float(xray)
        self.k_background = float(k_background)
        if self.background is not None:
            Thresholds(self.background, self.xray)  # inverted thresholds fail now
        self.dark = None if dark is None else np.ascontiguousarray(dark, dtype=np.float32)
        if self.dark is not None and (self.dark.ndim != 2 or not np.isfinite(self.dark).all()):
            raise CountingError(f"CountEvents: dark must be a finite (det_y, det_x) array, "
                                f"found shape {self.dark.shape}")
        if masks is not None:
            from framescope.masks import MaskStack

            masks = MaskStack.from_any(masks)
        self.masks = masks
        self.out = None if out is None else os.fspath(out)
        self.overwrite = bool(overwrite)
        self.thresholds: Thresholds | None = None  # of the current (last) series
        self.path: Path | None = None  # the file of the current (last) series
        self._writer: CountedWriter | None = None
        self._calibration: Any = None
        self._unresolved = False

    # ---- identity and pickling: the writer stays in this process -------------------------
    def params(self) -> dict[str, Any]:
        dark = None if self.dark is None else hashlib.blake2b(
            self.dark.tobytes(), digest_size=8).hexdigest()
        return {"background": self.background, "xray": self.xray, "method": self.method,
                "response": self.response,
                "k_background": self.k_background, "dark": dark,
                "masks": None if self.masks is None else self.masks.key, "out": self.out}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_writer"] = None
        return state

    # ---- the UDF ---------------------------------------------------------------------------
    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        out = {"events": Buffer("nav", "int64"), "counts": Buffer("sig", "float64")}
        if self.masks is not None:
            out["intensity"] = Buffer("nav", "float64", (len(self.masks),),
                                      extra_dims=("mask",),
                                      extra_coords=(tuple(self.masks.names),))
        return out

    def prepare(self, meta: Meta) -> dict[str, Any]:
        h, w = meta.frame_shape
        if h * w > 2**32:
            raise CountingError(f"CountEvents: frames of {h}x{w} px exceed uint32 indices")
        dark = self.dark
        if dark is None:
            dark = np.zeros(meta.frame_shape, np.float32)
        elif dark.shape != tuple(meta.frame_shape):
            raise CountingError(f"CountEvents: dark must have the frames' shape (det_y, "
                                f"det_x) = {tuple(meta.frame_shape)}, found {dark.shape}")
        weights = None
        if self.masks is not None:
            stack = self.masks.resolved(meta.calibration, meta.frame_shape)
            weights = np.asarray(stack.dense(meta.frame_shape), dtype=np.float64)
        return {"dark": dark, "weights": weights}

    def _current(self) -> Thresholds | None:
        if self.thresholds is not None:
            return self.thresholds
        if self.response is not None and self.background is None:
            return Thresholds(0.0, self.xray)  # the fit uses no background threshold
        if self.background is not None:
            return Thresholds(self.background, self.xray)
        return None

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        thresholds = self._current()
        if thresholds is None:  # no background yet: finalize() says why
            self._unresolved = True
            return
        data = np.ascontiguousarray(tile.data)
        if self.response is None:
            counts, indices, _ = count_block(data, state["dark"], thresholds.background,
                                             thresholds.xray)
        else:
            counts, indices, _ = peel_block(data, state["dark"], None,
                                            electron=self.response[0],
                                            blur=self.response[1], xray=thresholds.xray)
        results["events"][:] = counts
        results["counts"] += np.bincount(indices, minlength=results["counts"].size).reshape(
            results["counts"].shape)
        if state["weights"] is not None:
            frame_of = np.repeat(np.arange(len(counts)), counts)
            w = state["weights"][indices.astype(np.int64)]  # (events, k)
            for j in range(w.shape[1]):
                results["intensity"][:, j] = np.bincount(frame_of, weights=w[:, j],
                                                         minlength=len(counts))
        if self._writer is not None:
            self._writer.write(tile.positions, counts, indices)

    def finalize(self, results: dict[str, np.ndarray], meta: Meta) -> dict[str, np.ndarray]:
        if self._unresolved and self._current() is None:
            raise CountingError("CountEvents: no background threshold: give background=, "
                                "or run on a stream job that took a dark series "
                                "(ZMQSource.take_dark or a series marked dark)")
        return results

    # ---- stream hooks (framescope.engine's analysis thread) ------------------------------
    def begin_series(self, series: Any, meta: Meta) -> None:
        """A stream series begins (``meta``: of the frames this UDF sees): thresholds (from
        its dark statistics when not given) and, with ``out``, its file."""
        self.end_series(series, ended=False)  # a file left open by a series cut short
        self._unresolved = False
        self.thresholds = None
        stats = getattr(series, "dark_stats", None)
        if self.background is not None:
            self.thresholds = Thresholds(self.background, self.xray)
        elif stats is None and self.response is not None:
            self.thresholds = Thresholds(0.0, self.xray)  # the fit uses no background
        else:
            if stats is None:
                raise CountingError(f"CountEvents, series {series.series}: no background "
                                    f"threshold: give background=, or take a dark series "
                                    f"first (ZMQSource.take_dark)")
            good = stats.std[~stats.bad] if (~stats.bad).any() else stats.std
            sigma = float(np.median(good))
            self.thresholds = Thresholds(
                self.k_background * sigma, self.xray, noise_mean=0.0, noise_sigma=sigma,
                k_background=self.k_background, n_frames=int(stats.n))
        self._calibration = meta.calibration
        if self.out is not None:
            self.path = Path(self.out.replace("{series}", str(series.series)))
            self._writer = CountedWriter(self.path, meta.scan_shape, meta.frame_shape,
                                         overwrite=self.overwrite)
            log.info("series %d: counting into %s (background %g, X-ray %g)", series.series,
                     self.path, self.thresholds.background, self.thresholds.xray)

    def end_series(self, series: Any, ended: bool) -> None:
        """The series ended (or was cut short): its file is closed, complete."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close(self.thresholds, self._calibration)
            log.info("series %s: %d frames, %d events counted into %s%s",
                     getattr(series, "series", "?"), writer.frames_written,
                     writer.events_written, writer.path, "" if ended else " (unfinished)")
