"""The default executor: threads of this process, plain scripts work; processes when asked."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import framescope
from framescope.engine import _connect, get_client, run
from framescope.udf import UDF, Buffer

SCRIPT = """\
import os
import numpy as np
import framescope as fs
print("RUN", os.getpid(), flush=True)   # printed once per execution of this file
arr = fs.open({path!r})
print("CLIENT", fs.engine.get_client())
img = arr.fs.virtual_image(fs.masks.ring(8, 8, 3, 7))
mean, mx, std = arr.fs.mean_frame(), arr.fs.max_frame(), arr.fs.std_frame()
np.save({out!r}, np.stack([img.values.ravel()[:16], mean.values.ravel()[:16],
                          mx.values.ravel()[:16].astype("f8"), std.values.ravel()[:16]]))
"""


@pytest.mark.parametrize("suffix", [".npy", ".raw"])
def test_a_plain_script_without_main_guard_runs_once(tmp_path, suffix):
    """The README's first lines as a script: no ``if __name__ == "__main__":`` needed."""
    ref = np.random.default_rng(2).integers(0, 400, size=(6, 5, 16, 16)).astype("u2")
    path = tmp_path / f"scan{suffix}"
    if suffix == ".npy":
        np.save(path, ref)
    else:
        path.write_bytes(ref.tobytes())
        (tmp_path / "scan.raw.json").write_text('{"shape": [6, 5, 16, 16], "dtype": "uint16"}')
    out = tmp_path / "out.npy"
    script = tmp_path / "first.py"
    script.write_text(SCRIPT.format(path=str(path), out=str(out)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("RUN") == 1, proc.stdout  # no worker re-ran the script
    assert "CLIENT inline" in proc.stdout
    got = np.load(out)
    ring = framescope.masks.ring(8, 8, 3, 7).rasterize((16, 16))
    flat = ref.reshape(-1, 16, 16).astype("f8")
    np.testing.assert_allclose(got[0], (ref * ring).sum((2, 3)).ravel()[:16], rtol=1e-6)
    np.testing.assert_allclose(got[1], flat.mean(0).ravel()[:16], rtol=1e-12)
    np.testing.assert_array_equal(got[2], flat.max(0).ravel()[:16])
    np.testing.assert_allclose(got[3], flat.std(0).ravel()[:16], rtol=1e-10)


class Pids(UDF):
    """Records the process id that analysed each frame (a pure-Python, GIL-bound UDF)."""

    needs_processes = True

    def buffers(self, meta):
        return {"pid": Buffer("nav", "int64")}

    def process_tile(self, tile, results, state):
        results["pid"][:] = os.getpid()


@pytest.fixture
def no_user_client(monkeypatch):
    """As in a fresh session: no dask default client (the session cluster is one here)."""
    monkeypatch.setattr(_connect, "_user_default", lambda: None)
    yield
    local = _connect._default.pop("local", None)
    if local is not None:
        cluster = local.cluster
        local.close()
        cluster.close()


def test_default_is_this_process_and_local_starts_worker_processes(no_user_client):
    arr = framescope.from_array(np.ones((4, 6, 4, 4), "u2"), chunks=(1, 6, 4, 4))
    assert get_client() == "inline"
    inline = run(_PidsInThreads(), arr)
    assert (inline["pid"].values == os.getpid()).all()
    # a UDF that declares it needs processes gets framescope's LocalCluster by default
    res = run(Pids(), arr)
    local = _connect._default["local"]
    workers = set(local.run(os.getpid).values())
    pids = set(np.unique(res["pid"].values).tolist())
    assert pids <= workers
    assert os.getpid() not in pids
    assert get_client("local") is local  # started once, reused
    with pytest.raises(TypeError, match="scheduler address"):
        get_client(3.5)


class _PidsInThreads(Pids):
    needs_processes = False


def test_connect_local_makes_the_local_cluster_the_default(no_user_client):
    client = framescope.connect("local")
    try:
        assert get_client() is client is _connect._default["local"]
        arr = framescope.from_array(np.ones((2, 3, 4, 4), "u2"))
        res = run(_PidsInThreads(), arr)
        assert os.getpid() not in set(res["pid"].values.ravel().tolist())
    finally:
        framescope.engine.disconnect()
    assert get_client() == "inline"
    assert client.status == "running"  # disconnect leaves the reusable cluster up

