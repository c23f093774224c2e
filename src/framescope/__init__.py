"""framescope: interactive and live analysis of pixelated-detector (4D-STEM) data."""

from framescope import accessor, errors, io, masks
from framescope._version import __version__
from framescope.engine import Job, connect, iter_run, run, submit
from framescope.io import from_array, open

__all__ = [
    "Job", "__version__", "accessor", "connect", "errors", "from_array", "io", "iter_run",
    "masks", "open", "run", "submit",
]


def __getattr__(name: str):  # lazy: keep `import framescope` light
    if name == "datasets":
        import framescope.datasets as datasets

        return datasets
    if name == "dashboard":  # panel/holoviews load on first use; the module is callable
        import framescope.dashboard as dashboard

        return dashboard
    if name == "live":  # pyzmq and the codecs load on first use ([live] extra)
        import framescope.live as live

        return live
    if name in ("ptycho", "phase", "events"):  # solvers, phase functions, event jobs: on use
        import importlib

        return importlib.import_module(f"framescope.{name}")
    raise AttributeError(f"module 'framescope' has no attribute {name!r}")
