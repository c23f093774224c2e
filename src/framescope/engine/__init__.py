"""Schedules UDFs over partitions of a dataset, inline or on dask.distributed."""

from framescope.engine._executor import INLINE, get_client
from framescope.engine._run import iter_run, run

__all__ = ["INLINE", "get_client", "iter_run", "run"]
