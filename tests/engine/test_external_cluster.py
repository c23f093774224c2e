"""framescope.connect() on a real external cluster: a ``dask scheduler`` and ``dask worker``
processes started here on 127.0.0.1, as a user starts them by hand or in a batch job.

The workers read the test file by path (tasks carry paths and offsets, not frames) and
import the UDFs they run from ``external_cluster_udfs`` (on their PYTHONPATH).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from external_cluster_udfs import SlowSum, opened_paths

import framescope as fs
from framescope.engine import disconnect, get_client, iter_run, run
from framescope.engine._connect import connected_client
from framescope.errors import ClusterError, ClusterVersionError
from framescope.udf import SumFrame

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the CI run

HERE = Path(__file__).resolve().parent
SCAN, DET = (16, 8), (16, 16)


class ExternalCluster:
    """``dask scheduler`` and ``dask worker`` subprocesses sharing a scheduler file."""

    def __init__(self, workdir: Path, n_workers: int) -> None:
        self.workdir = workdir
        self.file = workdir / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.scheduler = self._spawn(
            "scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
            "--port", "0", "--no-dashboard", "--scheduler-file", str(self.file))
        self.workers = [self.start_worker() for _ in range(n_workers)]
        self.address = self._address()

    def _spawn(self, name: str, module: str, *args: str, path: str = "") -> subprocess.Popen:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (path, str(HERE), env.get("PYTHONPATH", "")) if p)
        log = (self.workdir / f"{name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        log.close()  # the child holds its own descriptor
        self.procs.append(proc)
        return proc

    def start_worker(self, path: str = "") -> subprocess.Popen:
        """One single-threaded worker process (no nanny: its pid is the worker's)."""
        return self._spawn(
            "worker", "distributed.cli.dask_worker", "--scheduler-file", str(self.file),
            "--nworkers", "1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
            "--host", "127.0.0.1", "--local-directory", str(self.workdir),
            "--death-timeout", "60", path=path)

    def _address(self) -> str:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                logs = "\n".join(p.read_text() for p in self.workdir.glob("scheduler*.log"))
                raise RuntimeError(f"dask scheduler exited:\n{logs}")
            try:
                return json.loads(self.file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        raise RuntimeError(f"no scheduler file {self.file}")

    def wait_for_workers(self, client, n: int) -> None:
        """Wait until the scheduler knows exactly ``n`` workers."""
        client.wait_for_workers(n, timeout=90)
        deadline = time.monotonic() + 30
        while len(client.scheduler_info(n_workers=-1)["workers"]) != n:
            assert time.monotonic() < deadline, "dead workers were not removed"
            time.sleep(0.1)

    def close(self) -> None:
        for proc in reversed(self.procs):  # workers first
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A raw file written by framescope, and the same frames in memory."""
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 100, (*SCAN, *DET), dtype=np.uint16)
    ref[..., 4:8, 10:13] += 2000  # an off-centre disk: the COM moves away from zero
    path = tmp_path_factory.mktemp("data") / "scan.raw"
    fs.io.save(fs.from_array(ref), path, "raw", progress=False)
    return fs.open(path, chunks=1), ref, path  # one partition per scan row


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = ExternalCluster(tmp_path_factory.mktemp("dask"), n_workers=2)
    try:
        from distributed import Client

        with Client(c.address, timeout=60) as client:
            c.wait_for_workers(client, 2)
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def _no_default_left():
    yield
    disconnect()  # never leave this module's cluster as the default of later tests


def _ring(r_in: float, r_out: float) -> np.ndarray:
    y, x = np.indices(DET)
    d = np.hypot(y - DET[0] // 2, x - DET[1] // 2)
    return (d >= r_in) & (d <= r_out)


def test_connect_runs_every_analysis_on_the_cluster(cluster, data):
    from distributed import get_task_stream

    arr, ref, path = data
    client = fs.connect(cluster.address, timeout=30)
    assert get_client() is client
    assert get_client(cluster.address) is client  # one client per address
    ring = fs.masks.ring(DET[0] // 2, DET[1] // 2, 2, 6)
    with get_task_stream(client=client) as ts:
        vi = arr.fs.virtual_image(ring, cache=False)  # client=None: the connected cluster
        com = arr.fs.com()
        total = run(SumFrame(), arr)
    # every partition of the three jobs ran on the external workers, joined into two
    # tasks per worker thread
    keys = [t["key"] for t in ts.data]
    tasks = min(SCAN[0], 2 * sum(client.nthreads().values()))
    assert sum(k.startswith("run_source") for k in keys) == 3 * tasks
    # the workers opened the file at its path themselves
    assert any(str(path) in paths for paths in client.run(opened_paths).values())

    vi_inline = arr.fs.virtual_image(ring, cache=False, client="inline")
    expected = np.einsum("ijkl,kl->ij", ref.astype("f8"), _ring(2, 6))
    np.testing.assert_array_equal(vi.values, vi_inline.values)
    np.testing.assert_array_equal(vi.values, expected)

    com_inline = arr.fs.com(client="inline")
    y, x = np.indices(DET)
    frames = ref.astype("f8")
    mass = frames.sum((2, 3))
    for name, coord in (("com_y", y - DET[0] // 2), ("com_x", x - DET[1] // 2)):
        np.testing.assert_allclose(com[name], com_inline[name], rtol=1e-12)
        np.testing.assert_allclose(com[name], (frames * coord).sum((2, 3)) / mass, rtol=1e-6)
        assert np.abs(com[name]).min() > 0.5  # the disk is off-centre in both axes

    np.testing.assert_array_equal(total["sum"], ref.sum((0, 1), dtype="f8"))
    assert int(total["n"]) == ref.shape[0] * ref.shape[1]
    np.testing.assert_array_equal(total["sum"], run(SumFrame(), arr, client="inline")["sum"])

    client.close()  # closing the client undoes connect()
    assert connected_client() is None


def test_killed_worker_mid_job_still_gives_the_exact_result(cluster, data):
    arr, ref, _ = data
    client = fs.connect(cluster.address, timeout=30)
    pids = client.run(os.getpid)
    killed = None
    try:
        for seen, snapshot in enumerate(iter_run(SlowSum(), arr), 1):
            last = snapshot
            if seen == 1:  # 3 of 4 tasks to go: both workers are busy
                # or about to be: a task queued on the scheduler is not yet "processing"
                # in the moment between two tasks (CI once saw no worker busy here)
                deadline = time.monotonic() + 5.0
                busy = []
                while not busy and time.monotonic() < deadline:
                    busy = [w for w, keys in client.processing().items() if keys]
                    if not busy:
                        time.sleep(0.01)
                assert busy, "no worker had a task when one was to be killed"
                killed = busy[0]
                os.kill(pids[killed], signal.SIGKILL)
        assert killed is not None
        assert killed not in client.scheduler_info(n_workers=-1)["workers"]
        # every partition merged exactly once: sums of integer counts are exact
        np.testing.assert_array_equal(last["sum"], ref.sum((0, 1), dtype="f8"))
        assert int(last["n"]) == ref.shape[0] * ref.shape[1]
        assert bool(last["done"].all())
    finally:  # later tests get two workers again
        cluster.start_worker()
        cluster.wait_for_workers(client, 2)


def test_workers_of_another_release_are_refused(cluster, monkeypatch):
    from framescope.engine import _connect

    # this process claims another release than the one the workers import
    monkeypatch.setattr(_connect, "__version__", "99.0")
    with pytest.raises(ClusterVersionError, match=r"compatible with 99\.0") as err:
        fs.connect(cluster.address, timeout=30)
    assert err.value.address == cluster.address
    assert list(err.value.found.values()) == [fs.__version__] * 2  # both workers, named
    assert all(w in str(err.value) for w in err.value.found)
    assert connected_client() is None


def test_workers_of_another_patch_release_are_accepted_with_a_warning(
    cluster, monkeypatch, caplog
):
    from packaging.version import Version

    from framescope.engine import _connect

    major, minor = Version(fs.__version__).release[:2]
    monkeypatch.setattr(_connect, "__version__", f"{major}.{minor}.999")
    with caplog.at_level(logging.WARNING, logger="framescope.engine._connect"):
        client = fs.connect(cluster.address, timeout=30)
    assert get_client() is client
    assert f"workers run framescope {fs.__version__}" in caplog.text


def test_unreachable_scheduler_is_a_clear_error():
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ClusterError, match="no scheduler answered within 1 s") as err:
        fs.connect(address, timeout=1)
    assert err.value.address == address
    assert connected_client() is None


def test_lost_scheduler_is_a_clear_error_not_a_hang(tmp_path, data, caplog):
    arr, _, _ = data
    own = ExternalCluster(tmp_path, n_workers=1)
    try:
        # the client waits `timeout` s for a lost scheduler to come back before it closes
        client = fs.connect(own.address, timeout=60)
        own.wait_for_workers(client, 1)
        with pytest.raises(ClusterError, match="lost the connection") as err:  # noqa: PT012
            for seen, _ in enumerate(iter_run(SlowSum(), arr), 1):
                if seen == 1:
                    own.scheduler.kill()
        assert err.value.address == own.address
        assert own.address in str(err.value)
        # and before a job: at once, not after the reconnect timeout
        with pytest.raises(ClusterError, match="lost the connection"):
            arr.fs.sum_frame()
        with caplog.at_level(logging.WARNING, logger="framescope.engine._executor"):
            client.close()
            assert connected_client() is None
        assert own.address in caplog.text
    finally:
        own.close()


def test_a_partial_delivered_twice_is_merged_once(data, monkeypatch, caplog):
    """The merge guard: sums would count a repeated partition twice."""
    from framescope.engine import _run

    arr, ref, _ = data
    submit = _run._submit

    def twice(*args):
        n, partials, futures = submit(*args)
        return n, (p for part in partials for p in (part, part)), futures

    monkeypatch.setattr(_run, "_submit", twice)
    with caplog.at_level(logging.WARNING, logger="framescope.engine._run"):
        res = run(SumFrame(), arr, client="sync")
    np.testing.assert_array_equal(res["sum"], ref.sum((0, 1), dtype="f8"))
    assert int(res["n"]) == ref.shape[0] * ref.shape[1]
    assert caplog.text.count("skipped a repeated partial result") == SCAN[0]
