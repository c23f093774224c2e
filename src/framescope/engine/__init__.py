"""Schedules UDFs over partitions of a dataset, inline or on dask.distributed."""

from framescope.engine._connect import connect, disconnect, get_client
from framescope.engine._executor import INLINE, LOCAL, SYNC
from framescope.engine._merge import Accumulator
from framescope.engine._run import iter_run, run
from framescope.engine._tasks import Partial, prepared, run_frames

__all__ = [
    "INLINE",
    "LOCAL",
    "SYNC",
    "Accumulator",
    "Partial",
    "connect",
    "disconnect",
    "get_client",
    "iter_run",
    "prepared",
    "run",
    "run_frames",
]
