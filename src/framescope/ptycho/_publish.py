"""``publish_experiment``: a simulated ptychography experiment sent as a detector would.

The dark series (marked dark, see docs/live.md) and then the scan go out on a PUSH socket
(:class:`framescope.live.Publisher`), each header carrying the frames' calibration.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from framescope.ptycho._experiment import PtychoExperiment

__all__ = ["Publication", "publish_experiment"]

log = logging.getLogger(__name__)


class Publication:
    """A running :func:`publish_experiment` (a context manager yielding the endpoint).

    Attributes
    ----------
    endpoint : str
        The bound PUSH endpoint.
    frames_sent : int
        Scan frames sent so far (the dark series not counted).
    first_frame_time, last_frame_time : float or None
        ``time.perf_counter()`` just after the scan's first and last frame left.
    """

    def __init__(self, exp: PtychoExperiment, rate: float, protocol: str, endpoint: str,
                 compression: str, peer_timeout: float, join_timeout: float) -> None:
        self._exp = exp
        self._join_timeout = join_timeout
        self._args = (rate, protocol, endpoint, compression, peer_timeout)
        self.endpoint = ""
        self.frames_sent = 0
        self.first_frame_time: float | None = None
        self.last_frame_time: float | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> str:
        from framescope.live import Publisher

        rate, protocol, endpoint, compression, peer_timeout = self._args
        # bound here, so a bad endpoint raises in the caller and the port is known now
        pub = Publisher(endpoint, protocol, compression=compression, rate=rate,
                        peer_timeout=peer_timeout)
        self.endpoint = pub.endpoint
        self._thread = threading.Thread(target=self._run, args=(pub,), daemon=True,
                                         name="framescope-ptycho-publish")
        self._thread.start()
        return self.endpoint

    def _frames(self, flat: np.ndarray, scan: bool) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(len(flat)):
            yield i, flat[i]
            if scan:  # resumed after the frame was sent
                self.frames_sent += 1
                if i == 0:
                    self.first_frame_time = time.perf_counter()
        if scan:
            self.last_frame_time = time.perf_counter()

    def _run(self, pub: Any) -> None:
        from framescope.live import SeriesStart
        from framescope.live._calibration import HEADER_KEY
        from framescope.live._dark import dark_header

        exp = self._exp
        try:
            arr = exp.frames
            ny, nx, h, w = arr.shape
            header = {HEADER_KEY: json.loads(arr.attrs["calibration"])}
            pub.wait_for_peers()
            series = 1
            if exp.dark is not None:
                n = len(exp.dark)
                pub.send_series(SeriesStart(series, (h, w), exp.dark.dtype, n, (1, n),
                                            "raster", {"source": "ptycho_experiment (dark)",
                                                       **header, **dark_header()}),
                                self._frames(exp.dark, scan=False), stop=self._stop)
                series += 1
            flat = np.ascontiguousarray(arr.values).reshape(-1, h, w)
            pub.send_series(SeriesStart(series, (h, w), flat.dtype, ny * nx, (ny, nx),
                                        "raster", {"source": "ptycho_experiment",
                                                   **header}),
                            self._frames(flat, scan=True), stop=self._stop)
        except BaseException as exc:  # re-raised by __exit__
            self._error = exc
        finally:
            pub.close()

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        self._thread.join(self._join_timeout)
        if self._thread.is_alive():
            self._stop.set()  # ends the series at its next frame (no end message)
            log.warning("publish_experiment: still sending after %.0f s; stopped",
                        self._join_timeout)
        if self._error is not None and exc[0] is None:
            raise self._error


def publish_experiment(exp: PtychoExperiment, rate: float = 1000.0,
                       protocol: str = "dectris-stream2", *,
                       endpoint: str = "tcp://127.0.0.1:0", compression: str = "none",
                       peer_timeout: float = 30.0, join_timeout: float = 60.0,
                       ) -> Publication:
    """Publish an experiment as a detector would: its dark series, then the scan.

    A PUSH socket is bound on entry (127.0.0.1, a free port by default); a thread waits
    for one receiver, sends the dark frames (if any) as a series marked dark (``{"framescope":
    {"dark": true}}``, see docs/live.md: a :class:`~framescope.live.ZMQSource` job reduces
    it to dark statistics and subtracts its mean from what follows), then the scan at
    ``rate`` frames/s. Every series header carries the frames' calibration, so
    :func:`~framescope.ptycho.reconstruct` finds energy, angle per pixel and scan step.

    Parameters
    ----------
    exp : PtychoExperiment
    rate : float
        Scan frames per second (0: as fast as the receiver takes them).
    protocol : {"dectris-stream2", "dectris-stream1", "native"}
    endpoint, compression
        As for :class:`framescope.live.Publisher`.
    peer_timeout : float
        Seconds to wait for a receiver before sending anyway.
    join_timeout : float
        Seconds the context's exit waits for the sending to end.

    Returns
    -------
    Publication
        A context manager; ``with publish_experiment(exp) as endpoint:``. Its
        ``last_frame_time`` (``time.perf_counter()``) says when the scan's last frame left.

    Examples
    --------
    >>> exp = ptycho_experiment(dark_frames=20)  # doctest: +SKIP
    >>> with publish_experiment(exp, rate=500) as endpoint:  # doctest: +SKIP
    ...     ds = reconstruct(ZMQSource(endpoint), defocus=exp.defocus, timeout=30)
    """
    if not isinstance(exp, PtychoExperiment):
        raise TypeError(f"exp: expected a PtychoExperiment (ptycho_experiment()), found "
                        f"{type(exp).__name__}")
    return Publication(exp, rate, protocol, endpoint, compression, peer_timeout,
                       join_timeout)
