"""``start``: a reconstruction in its own thread, with a handle to watch and stop it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import xarray as xr

from framescope.ptycho._reconstruct import reconstruct

__all__ = ["Reconstruction", "start"]


class Reconstruction:
    """A running :func:`~framescope.ptycho.reconstruct` (made by :func:`start`).

    The solver runs in a thread of its own, so a notebook or dashboard stays free; a live
    source's receiver runs in yet another (the engine's), so the solver never holds it up.
    """

    def __init__(self, source: Any, callback: Callable[[xr.Dataset], Any] | None,
                 options: dict[str, Any]) -> None:
        self._stop = threading.Event()
        self._callback = callback
        self._latest: xr.Dataset | None = None
        self._result: xr.Dataset | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(source, options),
                                        name="framescope-ptycho", daemon=True)
        self._thread.start()

    def _run(self, source: Any, options: dict[str, Any]) -> None:
        try:
            self._result = reconstruct(source, stop=self._stop, callback=self._keep,
                                       **options)
        except BaseException as exc:  # handed to result()
            self._error = exc

    def _keep(self, ds: xr.Dataset) -> None:
        self._latest = ds
        if self._callback is not None:
            self._callback(ds)

    def partial(self) -> xr.Dataset | None:
        """The reconstruction at the last update (every ``update_every`` sweeps), or the
        final one; None before the first."""
        return self._result if self._result is not None else self._latest

    def done(self) -> bool:
        """True once it finished, stopped or failed."""
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = None) -> xr.Dataset:
        """Stop after the current sweep and return the reconstruction so far."""
        self._stop.set()
        return self.result(timeout)

    def result(self, timeout: float | None = None) -> xr.Dataset:
        """The final reconstruction.

        Raises
        ------
        TimeoutError
            Still running after ``timeout`` s (it goes on).
        Exception
            Whatever ended the reconstruction (bad calibration, a failed stream).
        """
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"reconstruction still running after {timeout:g} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def __repr__(self) -> str:
        ds = self.partial()
        its = 0 if ds is None else ds.attrs["iterations"]
        state = "running" if not self.done() else "done"
        return f"<Reconstruction {state}: {its} sweeps>"


def start(source: Any, *, callback: Callable[[xr.Dataset], Any] | None = None,
          **options: Any) -> Reconstruction:
    """Start :func:`~framescope.ptycho.reconstruct` in a thread and return its handle.

    Parameters
    ----------
    source : xarray.DataArray or live source
    callback : callable, optional
        Also called with every update (in the solver's thread).
    **options
        As for :func:`~framescope.ptycho.reconstruct` (not ``stop``: use
        :meth:`Reconstruction.stop`).

    Examples
    --------
    >>> rec = start(ZMQSource(endpoint), defocus="20 nm")  # doctest: +SKIP
    >>> rec.partial()["object_phase"].plot()  # the image forming  # doctest: +SKIP
    >>> ds = rec.stop()  # doctest: +SKIP
    """
    if "stop" in options:
        raise TypeError("start(): stop= is the handle's stop(); pass no Event")
    return Reconstruction(source, callback, options)
