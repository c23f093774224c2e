"""Helpers the external dask workers import by name (tests/engine is on their PYTHONPATH).

Test modules are not importable on workers started outside pytest, so what a task or
``client.run`` sends must live here, in a plain module.
"""

from __future__ import annotations

import time
from typing import Any

from framescope.udf import SumFrame, Tile

DELAY = 0.15  # seconds per tile: long enough for a worker to be killed mid-job


class SlowSum(SumFrame):
    """SumFrame that sleeps per tile, so a job runs long enough to break the cluster."""

    def process_tile(self, tile: Tile, results: dict[str, Any], state: Any) -> None:
        time.sleep(DELAY)
        super().process_tile(tile, results, state)


def opened_paths() -> list[str]:
    """Files this worker process has opened as task sources (it reads them itself)."""
    from framescope.engine import _tasks

    return sorted({key[1] for key in _tasks._SOURCES})
