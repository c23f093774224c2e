"""framescope: interactive and live analysis of pixelated-detector (4D-STEM) data."""

from importlib.metadata import PackageNotFoundError, version

from framescope import accessor, errors, io
from framescope.engine import iter_run, run
from framescope.io import from_array, open

try:
    __version__ = version("framescope")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__", "accessor", "errors", "from_array", "io", "iter_run", "open", "run"]


def __getattr__(name: str):  # lazy: keep `import framescope` light
    if name == "datasets":
        import framescope.datasets as datasets

        return datasets
    raise AttributeError(f"module 'framescope' has no attribute {name!r}")
