"""Runs UDFs over files (partitions, inline or on dask.distributed) and live streams."""

from framescope.engine._connect import connect, disconnect, get_client
from framescope.engine._executor import INLINE, LOCAL, SYNC
from framescope.engine._job import Job
from framescope.engine._merge import Accumulator
from framescope.engine._submit import iter_run, run, submit
from framescope.engine._tasks import Partial, prepared, run_frames
from framescope.engine._wire import decode_message, encode_message

__all__ = [
    "INLINE",
    "LOCAL",
    "SYNC",
    "Accumulator",
    "Job",
    "Partial",
    "connect",
    "decode_message",
    "disconnect",
    "encode_message",
    "get_client",
    "iter_run",
    "prepared",
    "run",
    "run_frames",
    "submit",
]
