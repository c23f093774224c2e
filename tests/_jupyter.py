"""JupyterLab started for real on 127.0.0.1, for the proxy and notebook-in-browser tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard._browser import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET, redirects not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def jupyter_lab(root: Path, **env: str) -> Iterator[tuple[str, str]]:
    """JupyterLab on a free port with a token, serving ``root``; yields (base URL, token).

    Its own process group: jupyter, its kernels and what jupyter-server-proxy starts are
    killed together at the end.
    """
    token, port = secrets.token_hex(16), free_port()
    environ = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / "config"),
                   JUPYTER_DATA_DIR=str(root / "data"),
                   JUPYTER_RUNTIME_DIR=str(root / "runtime"), **env)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={token}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url="]
    if os.geteuid() == 0:  # CI containers
        cmd.append("--allow-root")
    log = open(root / "lab.log", "w")  # noqa: SIM115 (jupyter writes until the end)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=environ,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail("jupyter lab exited:\n" + (root / "lab.log").read_text()[-3000:])
            try:
                return get(f"{base}/api/status?token={token}")[0] == 200
            except OSError:
                return False

        wait_for(up, 60, "jupyter lab to answer")
        yield base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        if group_alive(proc.pid):  # a kernel or proxied server jupyter left behind
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
