"""The phase methods the dashboard offers: one table entry per method (no panel here).

Each :class:`PhaseMethod` says how to build its UDF from the dashboard's settings, which of
its outputs can be shown, which settings apply to it, and how to find out cheaply, before
any frame is read, that the data's calibration cannot serve it. Adding a method to the
Phase tab is one entry in :data:`PHASE_METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from framescope.udf import IDPC, SSB, UDF, Meta, Parallax

__all__ = ["PHASE_METHODS", "PhaseMethod", "PhaseSettings", "calibration_hint"]

#: example values of the calibration fields a method may need (for the hint)
_EXAMPLES = {"energy": '"300 kV"', "angle_per_px": '"0.5 mrad"', "semiconv": '"20 mrad"',
             "scan_step": '"0.3 Å"'}


@dataclass(frozen=True, slots=True)
class PhaseSettings:
    """The Phase tab's settings, as the methods take them.

    ``com`` are the COM tab's parameters (``cy``, ``cx``, ``radius``, ``rotation`` in
    degrees, ``flip_y``), which iDPC integrates; ``component`` the output shown (SSB
    computes the amplitude only when it is asked for).
    """

    component: str = "phase"
    defocus_nm: float = 0.0
    highpass: float = 0.0
    com: Mapping[str, Any] = field(default_factory=dict)


def _no_check(udf: UDF, meta: Meta) -> None:
    return None


@dataclass(frozen=True, slots=True)
class PhaseMethod:
    """One phase method of the dashboard.

    Attributes
    ----------
    name : str
        Its label in the method select.
    components : tuple of str
        Outputs of its UDF that can be shown (the first is the default).
    settings : frozenset of str
        Which :class:`PhaseSettings` fields apply (their fields are shown for it).
    needs : tuple of str
        Calibration fields it needs (named in the hint when its check fails).
    make : callable
        ``make(settings) -> UDF``; raises ValueError on settings the UDF refuses.
    check : callable
        ``check(udf, meta)``: raises ValueError, naming what is missing, when the data
        described by ``meta`` cannot be processed; cheap (no weights, no frames).
    """

    name: str
    components: tuple[str, ...]
    settings: frozenset[str]
    needs: tuple[str, ...]
    make: Callable[[PhaseSettings], UDF]
    check: Callable[[UDF, Meta], Any] = _no_check

    def component(self, name: str) -> str:
        """``name`` if this method has that output, else its first."""
        return name if name in self.components else self.components[0]

    def udf(self, settings: PhaseSettings, meta: Meta | None = None) -> UDF:
        """The UDF for ``settings``, checked against ``meta`` when given."""
        udf = self.make(settings)
        if meta is not None:
            self.check(udf, meta)
        return udf


def _ssb(s: PhaseSettings) -> UDF:
    # rotation and flip from the calibration, as arr.fs.ssb(); a weak phase object (half
    # the work) unless the amplitude is shown
    return SSB(defocus=s.defocus_nm * 1e-9,
               object="complex" if s.component == "amplitude" else "phase")


def _idpc(s: PhaseSettings) -> UDF:
    return IDPC(**s.com, highpass=s.highpass)


def _tcbf(s: PhaseSettings) -> UDF:
    # the defocus is fitted (a given one would replace the fit, and 0 would undo it)
    return Parallax()


PHASE_METHODS: Mapping[str, PhaseMethod] = MappingProxyType({
    "SSB": PhaseMethod("SSB", ("phase", "amplitude"), frozenset({"defocus_nm"}),
                       ("energy", "angle_per_px", "semiconv", "scan_step"), _ssb,
                       lambda udf, meta: udf.geometry(meta)),
    "iDPC": PhaseMethod("iDPC", ("phase",), frozenset({"highpass", "com"}), (), _idpc),
    "tcBF": PhaseMethod("tcBF", ("phase", "tcbf"), frozenset(), ("semiconv", "angle_per_px"),
                        _tcbf, lambda udf, meta: udf.plan(meta)),
})


def calibration_hint(method: PhaseMethod) -> str:
    """How to give the calibration ``method`` needs (for the message in the view)."""
    fields = ", ".join(f"{k}={_EXAMPLES[k]}" for k in method.needs)
    return (f"{method.name} needs a calibration with {', '.join(method.needs)}. Calibrate "
            f"the array before opening the dashboard: arr = arr.fs.calibrate({fields}) "
            "(your values); for a live stream, ZMQSource(..., calibration={...}).")
