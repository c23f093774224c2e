"""Execute a notebook with nbclient on a kernel of a given Python (this venv's or another).

The kernel is registered in a private kernel directory with the interpreter's absolute
path, so a ``python3`` kernelspec elsewhere on the machine (user or system Jupyter dirs)
can never run the notebooks instead.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "framescope-under-test"


def kernel_manager(python: str | os.PathLike[str], spec_dir: Path) -> KernelManager:
    """A KernelManager whose only kernelspec runs ipykernel on ``python``."""
    kdir = spec_dir / KERNEL
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [os.fspath(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"framescope test ({python})", "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


def _group(pgid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def execute(name: str, tmp: Path, *, python: str | os.PathLike[str],
            cell_timeout: float = 60, grace: float = 20) -> nbformat.NotebookNode:
    """Run notebook ``name`` top to bottom in ``tmp`` (its working directory).

    A failing cell fails the test with that cell's source and traceback. jupyter_client
    starts the kernel as the leader of a new process group; whatever the notebook started
    (clusters, workers, simulators) and left running ``grace`` s after the kernel shut down
    is killed and fails the test: notebooks clean up after themselves.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    km = kernel_manager(python, tmp / "kernels")
    client = NotebookClient(nb, km=km, timeout=cell_timeout, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(tmp)}})
    started: list[int] = []
    client.on_notebook_start = lambda **_: started.append(km.provisioner.pgid)
    failure = None
    try:
        client.execute(cleanup_kc=True)  # km is ours: ask nbclient to shut the kernel down
    except (CellExecutionError, CellTimeoutError) as exc:
        failure = f"{name}: a cell failed\n{exc}"
    finally:
        left = _leftovers(started[0], grace) if started and started[0] else []
    if failure:
        pytest.fail(failure, pytrace=False)
    if left:
        pytest.fail(f"{name} left processes running after its kernel stopped: {left}",
                    pytrace=False)
    return nb


def _leftovers(pgid: int, grace: float) -> list[str]:
    """Processes of the kernel's group still alive ``grace`` s after it stopped (killed)."""
    deadline = time.monotonic() + grace
    while (alive := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for p in alive:
        try:
            names.append(" ".join(p.cmdline()[:4]))
        except psutil.Error:
            names.append(str(p.pid))
    if alive:
        os.killpg(pgid, signal.SIGKILL)
    return names
