"""Phase imaging from 4D-STEM data: functions that run the phase UDFs through the engine.

Each method is a UDF in :mod:`framescope.udf` (one pass over the frames, progressive with
:func:`framescope.iter_run`, the same on live streams); the functions here run it with
:func:`framescope.run` and return its Dataset.
"""

from framescope.phase._idpc import idpc, integrate_gradient
from framescope.phase._parallax import parallax
from framescope.phase._ssb import ssb

__all__ = ["idpc", "integrate_gradient", "parallax", "ssb"]
