"""Connect to an external dask cluster and make it where every analysis runs.

Only the client connects here; tasks carry file paths and frame offsets, and the workers
read the frames themselves (see :mod:`framescope.engine._tasks`), so the workers need
framescope installed and the data at the same path.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from framescope._version import __version__
from framescope.engine._executor import set_connected
from framescope.errors import ClusterError, ClusterVersionError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_TIMEOUT", "check_workers", "client_for", "connect", "disconnect",
           "scheduler_address"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
_lock = threading.Lock()
# clients framescope opened from an address, reused per address for the session
_by_address: dict[str, Client] = {}


def scheduler_address(client: Client) -> str:
    """The scheduler address of ``client`` (no round trip), or ``"<unknown>"`` once closed."""
    return str(getattr(client.scheduler, "address", None) or "<unknown>")


def _release(version: str) -> tuple[int, ...] | str:
    """What must match between client and workers: ``major.minor``, else the whole string."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).release[:2]
    except InvalidVersion:
        return version


def check_workers(client: Client, address: str | None = None) -> dict[str, str | None]:
    """Check that every worker of ``client`` imports a framescope compatible with this one.

    Compatible means the same ``major.minor`` release; other differences are logged as a
    warning. Workers that join later are not checked (an adaptive or batch-queue cluster
    may have none yet).

    Parameters
    ----------
    client : distributed.Client
    address : str, optional
        Scheduler address for messages (default: the client's).

    Returns
    -------
    dict
        framescope version per worker address (None where it cannot be imported).

    Raises
    ------
    ClusterVersionError
        A worker cannot import framescope, or has another ``major.minor``.
    """
    address = address or scheduler_address(client)
    # the workers import framescope by name: no pickled function has to reach them first
    versions = client.get_versions(packages=["framescope"])
    found = {w: (info or {}).get("packages", {}).get("framescope")
             for w, info in versions["workers"].items()}
    bad = {w: v for w, v in found.items() if v is None or _release(v) != _release(__version__)}
    if bad:
        raise ClusterVersionError(address, __version__, bad)
    other = sorted({v for v in found.values() if v != __version__})
    if other:
        log.warning("dask scheduler %s: workers run framescope %s, this process %s",
                    address, ", ".join(str(v) for v in other), __version__)
    if not found:
        log.info("dask scheduler %s has no workers yet; workers that join are not checked",
                 address)
    return found


def _open(address: str, timeout: float) -> Client:
    from distributed import Client

    try:
        # timeout also bounds how long a lost scheduler is waited for before the client closes
        client = Client(address, timeout=timeout, set_as_default=False)
    except OSError as exc:  # TimeoutError, refused connections
        raise ClusterError(address, f"no scheduler answered within {timeout:g} s ({exc}); "
                           "is it running and reachable from here?") from exc
    try:
        check_workers(client, address)
    except BaseException:
        client.close()
        raise
    return client


def client_for(address: str, *, timeout: float = DEFAULT_TIMEOUT) -> Client:
    """A client of the scheduler at ``address``, opened once and reused while it runs.

    Used for ``client="tcp://…"``; :func:`connect` also makes it the default.

    Raises
    ------
    ClusterError
        No scheduler answers at ``address`` within ``timeout`` seconds.
    ClusterVersionError
        The workers lack a compatible framescope (see :func:`check_workers`).
    """
    with _lock:  # one client per address, even when jobs start in several threads
        client = _by_address.get(address)
        if client is None or client.status in ("closing", "closed"):
            client = _by_address[address] = _open(address, timeout)
            log.info("connected to the dask scheduler %s", address)
        return client


def connect(address: str | Client, *, timeout: float = DEFAULT_TIMEOUT) -> Client:
    """Run every analysis on the dask cluster at ``address`` (or of a ``Client``).

    Afterwards ``client=None`` (the default of :func:`framescope.run`, the ``arr.fs``
    methods and the dashboard) means this cluster. Tasks send the workers file paths and
    frame offsets, never frames: the workers must see the data at the same paths (a shared
    filesystem) and have a framescope of the same ``major.minor`` installed.

    Parameters
    ----------
    address : str or distributed.Client
        A scheduler address such as ``"tcp://10.0.0.5:8786"``, or a client (e.g. of a
        ``dask_jobqueue.SLURMCluster`` or a ``dask_gateway`` cluster).
    timeout : float
        Seconds to wait for the scheduler, now and when it is lost later (then the client
        closes and analyses raise :class:`~framescope.errors.ClusterError`).

    Returns
    -------
    distributed.Client
        The client now used by default. Closing it (``client.close()`` or leaving
        ``with fs.connect(...) as client:``) returns analyses to their previous default;
        :func:`disconnect` does so without closing a client you passed in.

    Raises
    ------
    ClusterError
        No scheduler answers within ``timeout``, or ``address`` is a closed client.
    ClusterVersionError
        A worker cannot import framescope, or runs another ``major.minor`` version.

    See Also
    --------
    framescope.engine.get_client : how ``client=`` is resolved.

    Examples
    --------
    >>> import framescope as fs
    >>> client = fs.connect("tcp://10.0.0.5:8786")  # doctest: +SKIP
    >>> arr = fs.open("/shared/scan.mib")  # doctest: +SKIP
    >>> adf = arr.fs.virtual_image(fs.masks.ring(128, 128, 40, 90))  # doctest: +SKIP
    >>> client.close()  # back to the previous default  # doctest: +SKIP
    """
    from distributed import Client

    if isinstance(address, str):
        client = client_for(address, timeout=timeout)
    elif isinstance(address, Client):
        client = address
        where = scheduler_address(client)
        if client.status not in ("running", "newly-created"):
            raise ClusterError(where, f"the client is {client.status}, expected running")
        check_workers(client, where)
    else:
        raise TypeError(f"connect: expected a scheduler address or a distributed.Client, "
                        f"found {type(address).__name__}")
    set_connected(client)
    log.info("framescope analyses now run on %s", scheduler_address(client))
    return client


def disconnect() -> Any:
    """Undo :func:`connect`: analyses go back to their previous default.

    A client opened from an address is closed; a client you passed to :func:`connect` is
    left open. Returns the client that was connected, or None.
    """
    client = set_connected(None)
    if client is None:
        return None
    with _lock:
        owned = [a for a, c in _by_address.items() if c is client]
        for a in owned:
            del _by_address[a]
    if owned:
        client.close()
    return client
