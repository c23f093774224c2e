"""The UDF protocol and the built-in analyses."""

from framescope.udf._base import UDF, Buffer, Events, Meta, Tile
from framescope.udf._com import CenterOfMass
from framescope.udf._extrema import MaxFrame
from framescope.udf._geometry import ScatteringGeometry
from framescope.udf._idpc import IDPC
from framescope.udf._masks import ApplyMasks
from framescope.udf._parallax import Parallax
from framescope.udf._polar import PolarTransform
from framescope.udf._radial import RadialProfile, RingBins
from framescope.udf._ssb import SSB
from framescope.udf._stats import FrameStats, SumFrame

__all__ = [
    "IDPC",
    "SSB",
    "UDF",
    "ApplyMasks",
    "Buffer",
    "CenterOfMass",
    "Events",
    "FrameStats",
    "MaxFrame",
    "Meta",
    "Parallax",
    "PolarTransform",
    "RadialProfile",
    "RingBins",
    "ScatteringGeometry",
    "SumFrame",
    "Tile",
]
