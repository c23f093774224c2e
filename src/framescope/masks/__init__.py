"""Virtual detectors: mask geometry, mask stacks and their dense / sparse matrix forms.

Specs (:func:`disk`, :func:`ring`, :func:`box`, :func:`polygon`, :func:`point`,
:func:`array`) are small frozen values in detector-pixel coordinates, ``y`` first, with the
centre of pixel ``(i, j)`` at ``(y, x) = (i, j)``. A :class:`MaskStack` names and orders them
and turns them into the ``(pixels, k)`` matrix of ``frames @ masks``.

Examples
--------
>>> import framescope.masks as fm
>>> stack = fm.MaskStack({"bf": fm.disk(128, 128, 20), "adf": fm.ring(128, 128, 40, 90)})
>>> stack.prefer_sparse((256, 256))
False
"""

from framescope.masks._array import ArrayMask, array
from framescope.masks._matrix import SPARSE_THRESHOLD, Window
from framescope.masks._polygon import Polygon, polygon
from framescope.masks._shapes import Box, Disk, Point, Ring, box, disk, point, ring
from framescope.masks._spec import MaskSpec
from framescope.masks._stack import MaskStack

__all__ = [
    "SPARSE_THRESHOLD",
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
