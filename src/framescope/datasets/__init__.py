"""Example and synthetic datasets.

:func:`synthetic` simulates a convergent probe scanned over a phase object, lazily and
deterministically, with the ground truth (object phase, probe-averaged phase gradient)
attached as coordinates, so analyses such as centre of mass / DPC can be checked against it.
"""

from framescope.datasets._physics import convergent_probe, phase_object
from framescope.datasets._synthetic import SyntheticReader, synthetic

__all__ = ["SyntheticReader", "convergent_probe", "phase_object", "synthetic"]
