"""Virtual detectors: mask geometry, mask stacks and their dense / sparse matrix forms.

Specs (:func:`disk`, :func:`ring`, :func:`box`, :func:`polygon`, :func:`point`,
:func:`array`) are small frozen values in detector-pixel coordinates, ``y`` first, with the
centre of pixel ``(i, j)`` at ``(y, x) = (i, j)``. A :class:`MaskStack` names and orders them
and turns them into the ``(pixels, k)`` matrix of ``frames @ masks``.

Geometric specs also take ``units="mrad"`` (or ``"rad"``, ``"1/Å"``, ``"1/nm"``): then their
numbers are detector-frame scattering angles (or spatial frequencies, ``theta = k * lambda``)
relative to the beam centre, e.g. ``ring(r_in=20, r_out=60, units="mrad")``. They become the
pixel specs they imply (``px = centre + value / angle_per_px``) where the calibration is
known: :meth:`MaskSpec.to_pixels`, :meth:`MaskStack.resolved`, and every analysis of a
calibrated array (``arr.fs.calibrate(...)``).

Examples
--------
>>> import framescope.masks as fm
>>> stack = fm.MaskStack({"bf": fm.disk(128, 128, 20), "adf": fm.ring(128, 128, 40, 90)})
>>> stack.prefer_sparse((256, 256))
False
>>> fm.ring(r_in=20, r_out=60, units="mrad").to_pixels(0.5e-3, (128, 128))
Ring(cy=128.0, cx=128.0, r_in=40.0, r_out=120.0)
"""

from framescope.masks._array import ArrayMask, array
from framescope.masks._matrix import SPARSE_THRESHOLD, Window
from framescope.masks._polygon import Polygon, polygon
from framescope.masks._shapes import Box, Disk, Point, Ring, box, disk, point, ring
from framescope.masks._spec import MaskSpec
from framescope.masks._stack import MaskStack
from framescope.masks._units import UNITS

__all__ = [
    "SPARSE_THRESHOLD",
    "UNITS",
    "ArrayMask",
    "Box",
    "Disk",
    "MaskSpec",
    "MaskStack",
    "Point",
    "Polygon",
    "Ring",
    "Window",
    "array",
    "box",
    "disk",
    "point",
    "polygon",
    "ring",
]
