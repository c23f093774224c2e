"""Where the receivers of a parallel stream job run: the :class:`Launcher` protocol and
receivers as child processes of this one (receivers on dask workers:
:mod:`framescope.engine._dask_receivers`)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections.abc import Collection
from typing import Any, Protocol

from framescope.engine._receiver_task import receiver_main

__all__ = ["Launcher", "ProcessLauncher"]

log = logging.getLogger(__name__)


class Launcher(Protocol):
    """Where the receivers of a parallel stream job run: starts, watches and ends them."""

    kind: str  # "process", "dask task": for messages

    def launch(self, configs: list[dict[str, Any]], udfs: dict[str, Any]) -> None:
        """Start one receiver per config (each calls :func:`receiver_main` with it)."""

    def failed(self) -> dict[int, str]:
        """Receivers (by index) that have ended, each with why."""

    def join(self, timeout: float, lost: Collection[int] = ()) -> None:
        """Wait up to ``timeout`` s for the receivers to end (after "stop"); force the rest
        and, at once, the ``lost`` ones."""


class ProcessLauncher:
    """Receivers as child processes of this one (the default).

    Parameters
    ----------
    mp_context : str or multiprocessing context
        How the processes start ("spawn", "forkserver").
    """

    kind = "process"

    def __init__(self, mp_context: str | mp.context.BaseContext = "spawn") -> None:
        self._ctx = mp.get_context(mp_context) if isinstance(mp_context, str) else mp_context
        self._procs: list[Any] = []

    def launch(self, configs: list[dict[str, Any]], udfs: dict[str, Any]) -> None:
        for config in configs:
            # own processes: their logging is ours to set up; they also watch their parent
            config = {**config, "configure_logging": True, "watch_parent": True,
                      "log_level": logging.getLogger("framescope").getEffectiveLevel()}
            p = self._ctx.Process(target=receiver_main, args=(config, udfs), daemon=True,
                                  name=f"framescope-receiver-{config['worker']}")
            p.start()
            self._procs.append(p)

    def failed(self) -> dict[int, str]:
        return {k: f"{p.name} (pid {p.pid}) exited with code {p.exitcode}"
                for k, p in enumerate(self._procs) if not p.is_alive()}

    def join(self, timeout: float, lost: Collection[int] = ()) -> None:
        deadline = time.monotonic() + timeout
        for k, p in enumerate(self._procs):
            p.join(0 if k in lost else max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("receiver process %s did not stop; terminating it", p.name)
                p.terminate()
                p.join(5)
