"""binder/ holds what repo2docker (mybinder.org, BinderHub) reads; the environment it
describes installs into a fresh virtual environment and runs the quick-start notebook.

repo2docker runs ``pip install -r binder/requirements.txt`` in the repository root with the
Python of ``binder/runtime.txt``; this test does the same with uv, whose cache (filled by
the project's own install) makes it take seconds and work offline.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from _notebooks import execute

pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"


def _runtime() -> str:
    """The ``X.Y`` Python version named by binder/runtime.txt."""
    text = (BINDER / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-(3\.\d+)", text)
    assert m, f"binder/runtime.txt: expected 'python-3.X', found {text!r}"
    return m.group(1)


def test_runtime_satisfies_requires_python():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lowest = re.fullmatch(r">=\s*3\.(\d+)", meta["requires-python"]).group(1)
    assert int(_runtime().split(".")[1]) >= int(lowest)


def _uv() -> list[str]:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv not found on PATH; install it as the README's test command does "
                    "(python3 -m pip install uv)")
    return [uv]


def _install(venv: Path) -> None:
    """``uv pip install -r binder/requirements.txt`` from the repository root, offline
    first (everything is in uv's cache after the project's install), online if the cache
    misses something. framescope itself is always built again from this checkout."""
    base = [*_uv(), "pip", "install", "-q", "-p", str(venv / "bin" / "python"),
            "--reinstall-package", "framescope", "-r", str(BINDER / "requirements.txt")]
    offline = subprocess.run([*base, "--offline"], cwd=REPO, capture_output=True, text=True)
    if offline.returncode != 0:
        online = subprocess.run(base, cwd=REPO, capture_output=True, text=True)
        assert online.returncode == 0, ("binder/requirements.txt did not install:\n"
                                        + offline.stderr[-2000:] + online.stderr[-2000:])


@pytest.mark.timeout(300)
def test_binder_environment_runs_the_quickstart(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([*_uv(), "venv", "-q", "-p", _runtime(), str(venv)], check=True,
                   cwd=tmp_path)
    _install(venv)
    python = venv / "bin" / "python"
    # what the image serves: framescope copied from this checkout (not an editable link to
    # it), and the server-proxy entry point that puts the dashboard in the launcher
    probe = subprocess.run(
        [str(python), "-c",
         "import sys, framescope\n"
         "from importlib.metadata import entry_points\n"
         "print(framescope.__file__)\n"
         "print(sorted(e.name for e in entry_points(group='jupyter_serverproxy_servers')))\n"
         "print(sys.version_info[:2])"],
        capture_output=True, text=True, check=True, cwd=tmp_path)
    where, proxies, version = probe.stdout.splitlines()
    assert Path(where).is_relative_to(venv)
    assert "framescope" in proxies
    assert version == str(tuple(int(v) for v in _runtime().split(".")))

    nb = execute("01-quickstart.ipynb", tmp_path / "run", python=python)
    assert nb.metadata.language_info.get("version", "").startswith(_runtime())
