"""An event job's results as NeXus/HDF5, with what is needed to trust them later.

Layout (``NX_class`` attributes; JSON where a structure has no NeXus form)::

    /entry                          NXentry  (default -> results)
      start_time, end_time, title
      results/                      NXcollection: the reducer's published state; arrays as
                                    datasets, numbers and strings as scalars, other values
                                    as JSON strings (attribute json=1)
      events/                       NXcollection, one row per reduced event:
        event, parameters_version, complete, worker, reason (empty when complete)
      process/                      NXprocess
        program = "framescope", version, git_commit (+ git_dirty) when run from a checkout,
        date, worker and reducer classes,
        trigger_map                 the map as JSON (TriggerMap.from_json reads it back)
        parameters/version_N/       NXparameters: values (JSON), time, source
        status                      the job's final status (JSON)

Written with h5py; the file is replaced.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framescope._provenance import git_commit
from framescope._version import __version__

__all__ = ["write_nexus"]


def _put(group: Any, name: str, value: Any) -> None:
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        group.create_dataset(name, data=value, compression="gzip" if value.size > 4096
                             else None)
    elif isinstance(value, bool | int | float | str | np.number | np.bool_):
        group.create_dataset(name, data=value)
    elif isinstance(value, Mapping):
        sub = group.create_group(name)
        sub.attrs["NX_class"] = "NXcollection"
        for k, v in value.items():
            _put(sub, str(k), v)
    else:
        ds = group.create_dataset(name, data=json.dumps(value, default=_jsonable))
        ds.attrs["json"] = 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _iso(t: float | None) -> str:
    t = datetime.datetime.now(datetime.UTC).timestamp() if t is None else t
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat()


def write_nexus(path: str | os.PathLike[str], *, published: Mapping[str, Any],
                trigger_map: str, parameters: Sequence[Mapping[str, Any]],
                status: Mapping[str, Any], events: Mapping[str, np.ndarray],
                classes: Mapping[str, str], started: float | None = None,
                ended: float | None = None, title: str = "framescope event job") -> Path:
    """Write results with their provenance (see the module docstring); returns the path.

    Parameters
    ----------
    published : dict
        The reducer's published state.
    trigger_map : str
        The map as JSON.
    parameters : list of dict
        Every parameter version (``Parameters.history()``).
    status : dict
        The job's status.
    events : dict of str to array
        Per reduced event: ``event``, ``parameters_version``, ``complete``, ``worker``,
        ``reason`` (str array).
    classes : dict
        ``worker`` and ``reducer``: the user classes' qualified names.
    started, ended : float, optional
        Unix times of the job's start and end.
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", default="results")
        entry["title"] = title
        entry["start_time"] = _iso(started)
        entry["end_time"] = _iso(ended)
        results = entry.create_group("results")
        results.attrs["NX_class"] = "NXcollection"
        for k, v in published.items():
            _put(results, str(k), v)
        ev = entry.create_group("events")
        ev.attrs["NX_class"] = "NXcollection"
        for k, v in events.items():
            if k == "reason":
                ev.create_dataset(k, data=np.asarray(v, dtype=object),
                                  dtype=h5py.string_dtype())
            else:
                ev.create_dataset(k, data=np.asarray(v))
        proc = entry.create_group("process")
        proc.attrs["NX_class"] = "NXprocess"
        proc["program"] = "framescope"
        proc["version"] = __version__
        proc["date"] = _iso(None)
        commit = git_commit()
        if commit is not None:
            proc["git_commit"] = commit[0]
            proc["git_dirty"] = commit[1]
        for role, name in classes.items():
            proc[role] = name
        proc["trigger_map"] = trigger_map
        proc["status"] = json.dumps(status, default=_jsonable)
        params = proc.create_group("parameters")
        params.attrs["NX_class"] = "NXcollection"
        for h in parameters:
            g = params.create_group(f"version_{h['version']}")
            g.attrs["NX_class"] = "NXparameters"
            g["values"] = json.dumps(h["values"])
            g["time"] = h["time"]
            g["source"] = h["source"]
            g["version"] = h["version"]
    return path
