from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("panel")
pytest.importorskip("holoviews")


@pytest.fixture(scope="module")
def small():
    """A small synthetic dataset in six partitions (two scan rows each), and its frames."""
    from framescope.datasets import synthetic

    arr = synthetic(scan=(12, 10), det=(32, 32), partition_mib=0.04, seed=3)
    assert len(arr.data.chunks[0]) == 6
    return arr, arr.values.astype(np.float64)


@pytest.fixture
def state(small):
    from framescope.dashboard._state import DashboardState

    st = DashboardState(small[0], client="inline")
    yield st
    st.close()
