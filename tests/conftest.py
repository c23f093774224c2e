from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def client():
    """One real LocalCluster of worker processes for the whole session."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=":0", host="127.0.0.1") as cluster,
        Client(cluster) as c,
    ):
        yield c
