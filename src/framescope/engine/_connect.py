"""Which executor runs an analysis: this process, framescope's LocalCluster or your cluster.

The rule (:func:`get_client`): a cluster you connected to or passed wins; without one,
analyses run in this process on a thread per core, which on one machine is faster for every
built-in analysis and starts at once. Worker processes start only when asked for
(``client="local"``, ``connect("local")``) or when a UDF declares it needs them.

Only the client connects here; tasks carry file paths and frame offsets, and the workers
read the frames themselves (see :mod:`framescope.engine._tasks`), so the workers need
framescope installed and the data at the same path.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from framescope._version import __version__
from framescope.engine._executor import INLINE, LOCAL, SYNC
from framescope.errors import ClusterError, ClusterVersionError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_TIMEOUT", "check_workers", "client_for", "connect", "connected_client",
           "disconnect", "get_client", "local_client", "scheduler_address", "set_connected"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
_lock = threading.Lock()
# clients framescope opened from an address, reused per address for the session
_by_address: dict[str, Client] = {}
# the client of connect() with its scheduler address, and framescope's own LocalCluster client
_default: dict[str, Any] = {}


def set_connected(client: Any) -> Any:
    """Make ``client`` (or None: nothing) the default of every analysis; return the previous.

    Kept here rather than as dask's default client: ``set_as_default`` also sets dask's
    global ``scheduler`` config, which :func:`framescope.connect` leaves to the user.
    """
    with _lock:
        previous, _ = _default.pop("connected", (None, ""))
        if client is not None:  # the address now: a closed client no longer knows it
            _default["connected"] = (client, getattr(client.scheduler, "address", "?"))
        return previous


def connected_client() -> Any:
    """The client of :func:`framescope.connect`, or None (also once it has been closed)."""
    with _lock:
        client, address = _default.get("connected", (None, ""))
        if client is not None and client.status in ("closing", "closed"):
            # closing it undoes connect(); so does a scheduler lost for longer than the
            # client's timeout, which the user must hear about before work moves elsewhere
            del _default["connected"]
            log.warning("the dask client of framescope.connect() (scheduler %s) is closed; "
                        "analyses run in this process again", address)
            client = None
        return client


def local_client() -> Client:
    """framescope's ``LocalCluster``: one single-threaded worker process per core.

    Started on first use (on 127.0.0.1, a few seconds) and reused for the session.
    """
    from distributed import Client, LocalCluster

    with _lock:
        client = _default.get("local")
        if client is None or client.status in ("closing", "closed"):
            n = os.cpu_count() or 1
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=":0")
            client = _default["local"] = Client(cluster, set_as_default=False)
            log.info("started a LocalCluster with %d workers: %s", n, client.dashboard_link)
        return client


def _user_default() -> Any:
    """dask's default ``Client`` if the user made one (``Client()`` in a notebook), else None."""
    import sys

    if "distributed" not in sys.modules:  # nobody made a client: do not import distributed
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def get_client(client: Any = None, *, processes: bool = False) -> Any:
    """Resolve the ``client=`` argument of :func:`framescope.run`.

    Parameters
    ----------
    client : None, "inline", "sync", "local", str or distributed.Client
        ``"inline"``: this process, a task per core at a time; ``"sync"``: one task after
        another in the calling thread (for debuggers and profilers; kernels then use all
        cores); ``"local"``: framescope's ``LocalCluster`` of worker processes
        (:func:`local_client`); another string is a scheduler address such as
        ``"tcp://host:8786"``, connected once per session; a ``distributed.Client`` is used
        as given. ``None``: the client of :func:`framescope.connect` if one is connected,
        else dask's default client if you made one, else ``"inline"``.
    processes : bool
        The analysis needs worker processes (:attr:`framescope.udf.UDF.needs_processes`):
        ``None`` then means ``"local"`` instead of ``"inline"``.
    """
    if client in (INLINE, SYNC):
        return client
    if client == LOCAL:
        return local_client()
    if isinstance(client, str):
        return client_for(client)
    if client is not None:
        from distributed import Client

        if isinstance(client, Client):
            return client
        raise TypeError(f"client: expected None, 'inline', 'sync', 'local', a scheduler "
                        f"address or a distributed.Client, found {type(client).__name__}")
    chosen = connected_client() or _user_default()
    if chosen is not None:
        return chosen
    return local_client() if processes else INLINE


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
        ``"local"`` (framescope's ``LocalCluster`` of worker processes on this machine,
        started now and kept for the session), a scheduler address such as
        ``"tcp://10.0.0.5:8786"``, or a client (e.g. of a ``dask_jobqueue.SLURMCluster``
        or a ``dask_gateway`` cluster).
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

    if address == LOCAL:
        client = local_client()
    elif isinstance(address, str):
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

    A client opened from an address is closed; a client you passed to :func:`connect` and
    framescope's ``LocalCluster`` (reused by ``client="local"``) are left open. Returns
    the client that was connected, or None.
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
