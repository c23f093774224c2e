"""The beam's energy and radiation from what a file or stream header gives."""

from __future__ import annotations

import logging
import math
from typing import Literal

from framescope.calibration._quantities import (
    electron_wavelength,
    energy_from_wavelength,
    photon_wavelength,
)

__all__ = ["beam_energy"]

log = logging.getLogger(__name__)

# a wavelength this long is X-ray (electrons: 0.07 Å at 30 keV; photons: 0.1 Å at 124 keV)
_XRAY_ABOVE = 0.1e-10


def beam_energy(energy: float | None = None, wavelength: float | None = None,
                radiation: Literal["electron", "xray"] | None = None,
                ) -> tuple[float, Literal["electron", "xray"]] | None:
    """The beam energy (eV) and radiation from an energy (eV) and/or a wavelength (m).

    Detector headers (DECTRIS ``incident_energy``/``incident_wavelength``) do not say
    whether the beam is electrons or photons. Given ``radiation`` wins; else both values
    together decide (``E λ = hc`` for photons), else a wavelength longer than 0.1 Å is
    X-ray, else electrons are assumed (logged).

    Returns
    -------
    (energy, radiation) or None
        None when neither value is a positive number.
    """
    e = energy if energy is not None and math.isfinite(energy) and energy > 0 else None
    lam = (wavelength if wavelength is not None and math.isfinite(wavelength)
           and wavelength > 0 else None)
    if e is None and lam is None:
        return None
    if radiation is None:
        if e is not None and lam is not None:
            photon = abs(photon_wavelength(e) - lam) <= 0.01 * lam
            electron = abs(electron_wavelength(e) - lam) <= 0.01 * lam
            radiation = "xray" if photon and not electron else "electron"
            if not (photon or electron):
                log.warning("beam: energy %.6g eV and wavelength %.6g Å agree neither for "
                            "electrons nor photons; using the wavelength as electrons'", e,
                            lam * 1e10)
                e = None
        elif lam is not None:
            radiation = "xray" if lam > _XRAY_ABOVE else "electron"
        else:
            radiation = "electron"
            log.info("beam: an energy of %.6g eV without a wavelength; taken as electrons' "
                     "(give radiation='xray' for photons)", e)
    if e is None:
        e = energy_from_wavelength(lam, radiation)  # type: ignore[arg-type]
    return e, radiation
