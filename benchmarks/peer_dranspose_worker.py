"""The worker and reducer classes of the dranspose peer benchmark (``_peer_dranspose.py``).

dranspose imports these by ``module:Class`` (``dranspose worker -c
peer_dranspose_worker:RingWorker``), in its own processes, with the ``.venv-dranspose``
interpreter; ``benchmarks/`` is put on their ``PYTHONPATH``. Nothing here imports
framescope.

Each event has two streams: ``eiger`` (DECTRIS stream v1, the "eiger legacy" ingester: one
uncompressed ``dimage-1.0`` frame) and ``i0`` (a contrast-style stream: pickled dicts, one
``running`` point with the beam monitor ``i0`` and the point number ``point``). The worker
returns the sum of the frame over a ring divided by I0; the reducer writes it into a scan
image and, at the end of the scan, saves the image and its timings to ``PEER_DRANSPOSE_OUT``
(an ``.npz``) for the driver to read back.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
from dranspose.data.contrast import ContrastRunning
from dranspose.data.eiger_legacy import EigerLegacyImage
from dranspose.middlewares import contrast as contrast_mw
from dranspose.middlewares import eiger_legacy as eiger_mw

# The ring, as fractions of the frame's smaller side around its centre pixel; the driver
# computes its reference with the same numbers.
RING_INNER = 0.15
RING_OUTER = 0.35


def ring_mask(ny: int, nx: int) -> np.ndarray:
    """Boolean ring around (ny // 2, nx // 2), radii RING_INNER..RING_OUTER of min(ny, nx)."""
    yy, xx = np.indices((ny, nx))
    r2 = (yy - ny // 2) ** 2 + (xx - nx // 2) ** 2
    side = min(ny, nx)
    return (r2 >= (RING_INNER * side) ** 2) & (r2 < (RING_OUTER * side) ** 2)


class RingWorker:
    """Per event: ring sum of the detector frame / I0 (dranspose's ``process_event``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # dranspose passes parameters=, context=, state=; none is needed here
        self._mask: np.ndarray | None = None

    def process_event(self, event: Any, parameters: Any = None, tick: bool = False) -> Any:
        det, mon = event.streams.get("eiger"), event.streams.get("i0")
        if det is None or mon is None:
            return None
        frame = eiger_mw.parse(det)
        point = contrast_mw.parse(mon)
        # the series' start and end (header, 'started'/'finished') give no result
        if not isinstance(frame, EigerLegacyImage) or not isinstance(point, ContrastRunning):
            return None
        desc = frame.data
        if desc.get("encoding") != "<":
            raise ValueError(f"eiger frame {frame.frame}: encoding {desc.get('encoding')!r}; "
                             "this benchmark sends uncompressed '<' frames only")
        nx, ny = desc["shape"]  # DECTRIS order: [width, height]
        image = np.frombuffer(desc["buffer"], dtype=desc["type"]).reshape(ny, nx)
        if self._mask is None or self._mask.shape != image.shape:
            self._mask = ring_mask(ny, nx)
        extra = point.model_extra or {}
        value = float(image[self._mask].sum(dtype=np.float64)) / float(extra["i0"])
        return {"frame": frame.frame, "point": int(extra["point"]), "value": value}


class ImageReducer:
    """Writes each event's value into a scan image (dranspose's ``process_result``).

    The scan is ``PEER_DRANSPOSE_SCAN`` = ``"rows,cols"``; points fill it row by row.
    ``publish`` is what dranspose's reducer serves over HTTP while the scan runs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        rows, cols = (int(v) for v in os.environ["PEER_DRANSPOSE_SCAN"].split(","))
        self.cols = cols
        self.image = np.full((rows, cols), np.nan)
        self.publish: dict[str, Any] = {"image": self.image}
        self.publish_rlock = threading.RLock()
        self.count = 0
        self.mismatched = 0  # events whose frame and I0 point differ (an event-forming error)
        self.t_first = float("nan")
        self.t_last = float("nan")

    def process_result(self, result: Any, parameters: Any = None) -> None:
        now = time.time()
        res = result.payload
        if self.count == 0:
            self.t_first = now
        self.t_last = now
        self.count += 1
        if res["frame"] != res["point"]:
            self.mismatched += 1
        k = res["point"]
        with self.publish_rlock:
            self.image[k // self.cols, k % self.cols] = res["value"]

    def finish(self, parameters: Any = None) -> None:
        out = os.environ.get("PEER_DRANSPOSE_OUT")
        if not out:
            return
        tmp = out + ".tmp.npz"  # written whole, then renamed: the driver polls for `out`
        np.savez(tmp, image=self.image, count=self.count, mismatched=self.mismatched,
                 t_first=self.t_first, t_last=self.t_last, t_finish=time.time())
        os.replace(tmp, out)
