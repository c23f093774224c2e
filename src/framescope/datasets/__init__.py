"""Example and synthetic datasets.

:func:`synthetic` simulates a convergent probe scanned over a phase object, lazily and
deterministically, with the ground truth (object phase, probe-averaged phase gradient)
attached as coordinates, so analyses such as centre of mass / DPC can be checked against it.
:func:`lowdose` simulates a direct electron detector at low dose with the true electron
positions, for electron counting.
"""

from framescope.datasets._lowdose import LowDose, lowdose
from framescope.datasets._physics import convergent_probe, phase_object
from framescope.datasets._synthetic import SyntheticReader
from framescope.datasets._synthetic_array import synthetic

__all__ = ["LowDose", "SyntheticReader", "convergent_probe", "lowdose", "phase_object",
           "synthetic"]
