"""Electron counting of direct-electron-detector frames into sparse events.

At low dose a direct electron detector's frames are read as counted electrons: after the
dark reference is subtracted, every pixel between a background threshold (above the read
noise) and an X-ray threshold that is a local maximum of its neighbourhood is one electron.
Above about 0.01 e-/px, where neighbouring electrons merge into one maximum,
``count_electrons(..., method="fit", electron=..., blur=...)`` instead fits and subtracts
charge clouds one electron at a time (far slower; it needs the mean signal and width of one
electron, which :func:`estimate_response` measures on frames of <= ~0.05 e-/px). The result,
:class:`CountedData`, keeps only the event pixels per frame (CSR-like), often 10-300x
smaller than the frames; :func:`save_counted` / :func:`load_counted` write and read stempy's
sparse HDF5 layout.

>>> from framescope.datasets import lowdose
>>> ds = lowdose(scan=(4, 4), det=(32, 32), dose=0.01, seed=0)
>>> counted = count_electrons(ds.frames, dark=ds.dark_frames(64).mean(axis=0))
>>> counted.n_frames, counted.frame_shape
(16, (32, 32))
"""

from framescope.counting._count import count_electrons, estimate_thresholds
from framescope.counting._counted import CountedData, CountingError
from framescope.counting._hdf5 import load_counted, save_counted
from framescope.counting._live import NO_XRAY, CountedWriter, CountEvents
from framescope.counting._response import Response, estimate_response
from framescope.counting._thresholds import Thresholds

__all__ = [
    "NO_XRAY",
    "CountEvents",
    "CountedData",
    "CountedWriter",
    "CountingError",
    "Response",
    "Thresholds",
    "count_electrons",
    "estimate_response",
    "estimate_thresholds",
    "load_counted",
    "save_counted",
]
