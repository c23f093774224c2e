"""The dashboard behind jupyter-server-proxy: a launcher entry and ``{base_url}framescope/``.

jupyter-server-proxy finds :func:`setup_framescope` through the
``jupyter_serverproxy_servers`` entry point. On the first request to
``<jupyter server>/framescope/`` it starts ``framescope serve`` on a free port of
127.0.0.1 and proxies the page and its websocket; the Jupyter server (on JupyterHub: the
hub's login) authenticates every request before it reaches the dashboard.
"""

from __future__ import annotations

import os
import shlex
import sys
from importlib.resources import files
from typing import Any

__all__ = ["ARGS_ENV", "DATA_ENV", "NAME", "setup_framescope"]

#: the path under the Jupyter server's base URL, and the launcher entry's name
NAME = "framescope"
#: dataset to serve instead of the demo (anything ``framescope serve`` opens)
DATA_ENV = "FRAMESCOPE_PROXY_DATA"
#: extra ``framescope serve`` options, shell-quoted (e.g. ``--scheduler tcp://…:8786``)
ARGS_ENV = "FRAMESCOPE_PROXY_ARGS"


def setup_framescope() -> dict[str, Any]:
    """jupyter-server-proxy's settings for the framescope dashboard.

    The command serves the demo dataset, or the dataset named by ``$FRAMESCOPE_PROXY_DATA``,
    with ``$FRAMESCOPE_PROXY_ARGS`` appended; both are read when the Jupyter server starts.

    Returns
    -------
    dict
        ``command`` (``{port}`` and ``{base_url}`` are filled in by the proxy),
        ``absolute_url``, ``timeout`` and ``launcher_entry`` as jupyter-server-proxy's
        ``ServerProcess`` expects them.
    """
    data = os.environ.get(DATA_ENV, "").strip()
    command = [
        sys.executable, "-m", "framescope.cli", "serve", *([data] if data else ["--demo"]),
        "--port", "{port}", "--address", "127.0.0.1",
        # the app lives at the proxied path itself (absolute_url below), so the page, its
        # static resources and its websocket all resolve below {base_url}framescope/
        "--prefix", "{base_url}" + NAME,
        # the browser's Origin is the hub's public host, unknown here; the Jupyter server
        # already checked the origin (and the login) before proxying the websocket
        "--allow-websocket-origin", "*",
        *shlex.split(os.environ.get(ARGS_ENV, "")),
    ]
    return {
        "command": command,
        "absolute_url": True,
        # the demo simulates its frames into the workers' memory before the port opens
        "timeout": 180,
        "new_browser_tab": True,
        "launcher_entry": {
            "title": NAME,
            "icon_path": str(files("framescope") / "_static" / "framescope.svg"),
        },
    }
