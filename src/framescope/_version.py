"""The installed version, importable without importing the rest of framescope."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("framescope")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"
