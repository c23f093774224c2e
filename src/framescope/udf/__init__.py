"""The UDF protocol and the built-in analyses."""

from framescope.udf._base import UDF, Buffer, Meta, Tile
from framescope.udf._stats import FrameStats, SumFrame

__all__ = ["UDF", "Buffer", "FrameStats", "Meta", "SumFrame", "Tile"]
