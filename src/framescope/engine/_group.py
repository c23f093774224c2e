"""Several UDFs in one pass: every tile is read (and moved to the device) once for all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from framescope.engine._tasks import Partial, prepared
from framescope.udf._base import UDF, Buffer, Meta, Tile

__all__ = ["Group", "named_udfs", "task_udf"]


def named_udfs(udfs: UDF | Sequence[UDF] | Mapping[str, UDF]) -> dict[str, UDF]:
    """Name the UDFs of a run: a mapping keeps its keys, a sequence is numbered ``"0"``, ...

    Raises
    ------
    TypeError
        Something other than UDF instances, or none at all.
    """
    if isinstance(udfs, UDF):
        return {"0": udfs}
    if isinstance(udfs, Mapping):
        named = {str(k): u for k, u in udfs.items()}
    elif isinstance(udfs, Sequence) and not isinstance(udfs, str):
        named = {str(i): u for i, u in enumerate(udfs)}
    else:
        named = {}
    bad = [k for k, u in named.items() if not isinstance(u, UDF)]
    if not named or bad:
        raise TypeError(f"udfs: expected a UDF, a list of UDFs or a dict of name → UDF, "
                        f"found {udfs!r}")
    return named


class Group(UDF):
    """Runs several UDFs on the same tiles; buffers are kept apart as ``"<name>/<key>"``.

    A task prepares each member once (shared states come from the per-process cache, as for
    a single UDF); :meth:`split` turns the group's partial result into one per member, so
    each member merges (its own :meth:`UDF.merge`) and publishes exactly as if it had run
    alone: the group itself is never merged.

    Parameters
    ----------
    udfs : dict of name → UDF
    """

    def __init__(self, udfs: Mapping[str, UDF]) -> None:
        self.udfs = dict(udfs)

    @property
    def needs_processes(self) -> bool:  # type: ignore[override]
        return any(u.needs_processes for u in self.udfs.values())

    def buffers(self, meta: Meta) -> dict[str, Buffer]:
        return {f"{name}/{k}": b for name, u in self.udfs.items()
                for k, b in u.buffers(meta).items()}

    def prepare(self, meta: Meta) -> dict[str, Any]:
        return {name: prepared(u, meta) for name, u in self.udfs.items()}

    def takes_events(self, meta: Meta) -> bool:
        return all(u.takes_events(meta) for u in self.udfs.values())

    def process_tile(self, tile: Tile, results: dict[str, np.ndarray], state: Any) -> None:
        for name, u in self.udfs.items():
            mine = _members(results, name)
            u.process_tile(tile, mine, state[name])
            for k, v in mine.items():  # a member may rebind a key; keep what it left there
                results[f"{name}/{k}"] = v

    def split(self, part: Partial) -> dict[str, Partial]:
        """The partial result of each member UDF, by name."""
        return {name: Partial(part.positions, _members(part.nav, name), _members(part.acc, name))
                for name in self.udfs}

    def params(self) -> dict[str, Any]:
        return {name: [type(u).__qualname__, u.key] for name, u in self.udfs.items()}


def _members(buffers: Mapping[str, Any], name: str) -> dict[str, Any]:
    prefix = f"{name}/"
    return {k[len(prefix):]: v for k, v in buffers.items() if k.startswith(prefix)}


def task_udf(named: Mapping[str, UDF]) -> UDF:
    """What each task (or live batch) runs: the one UDF, or a :class:`Group` of several."""
    return next(iter(named.values())) if len(named) == 1 else Group(named)
