"""Iterative ptychography: rPIE/ePIE solvers fed by the engine, from files or live streams.

An iterative consumer (see DESIGN.md): :func:`reconstruct` runs
:class:`CollectFrames` through the engine (:func:`framescope.run` on an array,
:func:`framescope.submit` on a live source) and iterates :class:`RPIE` over the frames
received so far; :func:`start` runs it in a thread of its own.
"""

from framescope.ptycho._collect import CollectFrames
from framescope.ptycho._cxi import read_cxi, write_cxi
from framescope.ptycho._experiment import PtychoExperiment, ptycho_experiment
from framescope.ptycho._handle import Reconstruction, start
from framescope.ptycho._modes import initial_modes, orthogonalise
from framescope.ptycho._positions import PositionRefiner, load_positions, positions_from_stream
from framescope.ptycho._problem import amplitudes
from framescope.ptycho._publish import publish_experiment
from framescope.ptycho._raar import RAAR
from framescope.ptycho._reconstruct import reconstruct
from framescope.ptycho._setup import (
    ZonePlate,
    initial_probe,
    object_pixel,
    scan_matrix,
    scan_positions,
    zone_plate_probe,
)
from framescope.ptycho._solver import RPIE, rpie_step

__all__ = [
    "RAAR",
    "RPIE",
    "CollectFrames",
    "PositionRefiner",
    "PtychoExperiment",
    "Reconstruction",
    "ZonePlate",
    "amplitudes",
    "initial_modes",
    "initial_probe",
    "load_positions",
    "object_pixel",
    "orthogonalise",
    "positions_from_stream",
    "ptycho_experiment",
    "publish_experiment",
    "read_cxi",
    "reconstruct",
    "rpie_step",
    "scan_matrix",
    "scan_positions",
    "start",
    "write_cxi",
    "zone_plate_probe",
]
