"""Events from several streams: a trigger map, user workers, a sequential reducer.

A detector stream, an I0 counter, motor positions, a spectrum: each arrives on its own
ZeroMQ stream at its own rate. A :class:`TriggerMap` says which frames of which stream make
event n and which (virtual) worker gets them; user :class:`EventWorker` s turn events into
results (in threads of this process, or as long-running tasks on dask workers); a user
:class:`Reducer` takes the results in event order and publishes its state, seen over HTTP,
in the dashboard and in a NeXus file with the parameters and the map. See docs/events.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from framescope.events._classes import EventWorker, Reducer, Result
from framescope.events._former import Event, StreamFrame
from framescope.events._http import ResultsServer
from framescope.events._job import EventJob
from framescope.events._nexus import write_nexus
from framescope.events._params import Parameters
from framescope.events._record import record_streams
from framescope.events._replay import replay_hdf5, replay_streams
from framescope.events._simulate import simulate_streams
from framescope.events._triggermap import EventSpec, StreamFrames, TriggerMap

__all__ = [
    "Event",
    "EventJob",
    "EventSpec",
    "EventWorker",
    "Parameters",
    "Reducer",
    "Result",
    "ResultsServer",
    "StreamFrame",
    "StreamFrames",
    "TriggerMap",
    "record_streams",
    "replay_hdf5",
    "replay_streams",
    "run",
    "simulate_streams",
    "submit",
    "write_nexus",
]


def submit(streams: Mapping[str, tuple[str, str]], trigger_map: TriggerMap,
           worker: type[EventWorker], reducer: type[Reducer], *,
           parameters: Mapping[str, Any] | Parameters | None = None, workers: int = 1,
           client: Any = None, timeout: float = 10.0, reorder_grace: float = 0.5,
           max_inflight: int = 64, context: Mapping[str, Any] | None = None,
           http: bool | int = False, http_host: str = "127.0.0.1",
           token: str | None = None, record: str | os.PathLike[str] | None = None,
           ) -> EventJob:
    """Start an event job; returns at once with its handle.

    Parameters
    ----------
    streams : dict of str to (endpoint, protocol)
        Every stream the trigger map names: the endpoint its sender binds and its protocol
        (``dectris-stream1``, ``dectris-stream2``, ``native``, ``values-json``,
        ``values-cbor``).
    trigger_map : TriggerMap
        Which frames make which event (:meth:`TriggerMap.per_point` for the common cases);
        an open map is extended with :meth:`EventJob.extend_map`.
    worker : type of EventWorker
        Instantiated once per real worker per scan.
    reducer : type of Reducer
        Instantiated once per scan; gets results in event order, each once.
    parameters : dict or Parameters, optional
        Initial parameters (version 0); :meth:`EventJob.set_parameters` changes them.
    workers : int
        Real workers.
    client : None, "inline", distributed.Client, "local" or a scheduler address
        None / "inline": workers are threads of this process; otherwise long-running tasks,
        one per dask worker.
    timeout : float
        A stream silent this long gives up on the frames an event still waits for (the
        event is marked incomplete, with the reason): never a hang.
    reorder_grace : float
        A frame still missing this long after a later frame of its stream is skipped.
    max_inflight : int
        Events sent to one worker and not yet answered.
    context : dict, optional
        Passed to every worker and the reducer (with ``streams``, ``n_workers``, ...).
    http : bool or int
        Serve the reducer's published state, the parameters and the status over HTTP
        (True: a free port; an int: that port); :attr:`EventJob.http_url`. It stays up
        after the job ended, until :meth:`EventJob.close`.
    http_host : str
        Interface the HTTP view binds (127.0.0.1: this machine only).
    token : str, optional
        Lets ``POST /parameters`` with ``Authorization: Bearer <token>`` change parameters;
        without one the view is read-only.
    record : path, optional
        Record every message of every stream, raw, as received, to this HDF5 file
        (:func:`replay_streams` plays it back: the same job on the replay gives the same
        result).
    """
    if not isinstance(parameters, Parameters):
        parameters = Parameters(parameters or {})
    return EventJob(streams, trigger_map, worker, reducer, parameters=parameters,
                    workers=workers, client=client, timeout=timeout,
                    reorder_grace=reorder_grace, max_inflight=max_inflight, context=context,
                    http=http, http_host=http_host, token=token, record=record)


def run(streams: Mapping[str, tuple[str, str]], trigger_map: TriggerMap,
        worker: type[EventWorker], reducer: type[Reducer], *, timeout_s: float | None = None,
        **kwargs: Any) -> dict[str, Any]:
    """:func:`submit` and wait: the reducer's published state at the end.

    ``timeout_s`` bounds the wait (the job is stopped then, and TimeoutError raised).
    """
    job = submit(streams, trigger_map, worker, reducer, **kwargs)
    try:
        return job.result(timeout_s)
    except TimeoutError:
        job.stop()
        raise
