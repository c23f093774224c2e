"""rPIE (and ePIE) on one probe and one object, written with the array module of its inputs.

Conventions:

* The exit wave at scan position ``j`` is ``psi = P_j * O[top_j : top_j + (h, w)]`` where
  ``P_j`` is the probe moved by the sub-pixel part of position ``j`` (a Fourier phase ramp,
  exact for a band-limited probe on its periodic window) and ``top_j`` its whole-pixel
  part.
* The far field is ``Psi = fft2(psi, norm="ortho")`` in numpy's layout (zero frequency at
  index 0): the measured amplitudes given to the solver are ``ifftshift(sqrt(I))`` of
  frames whose zero frequency is at ``(h//2, w//2)``, see
  :func:`framescope.ptycho.amplitudes`.
* Updates follow Maiden & Rodenburg 2009 (ePIE) and Maiden, Johnson & Li 2017 (rPIE,
  Optica 4, 736)::

      O' = O + conj(P) dpsi / ((1 - alpha) |P|^2 + alpha max|P|^2)
      P' = P + conj(O) dpsi / ((1 - beta) |O|^2 + beta max|O|^2)

  with ``dpsi`` the change of the exit wave under the modulus constraint. ``alpha = 1``
  (and ``beta = 1``) is ePIE with unit step sizes.
"""

from __future__ import annotations

import types
from functools import partial
from typing import Any

import numpy as np

from framescope.ptycho._modes import orthogonalise, rpie_modes_step
from framescope.udf._backend import to_host, xp

__all__ = ["RPIE", "fft_module", "layout", "rpie_step", "shift_ramp"]

_EPS = 1e-12  # |Psi| floor of the modulus projection (a zero far field keeps its phase 0)


def fft_module(mod: types.ModuleType) -> Any:
    """FFTs of array module ``mod`` that keep complex64: scipy.fft on the host, cupy.fft on
    the GPU (numpy.fft would compute in complex128)."""
    if mod is np:
        import scipy.fft

        return scipy.fft
    return mod.fft


def rpie_step(
    obj: Any,
    probe: Any,
    amplitude: Any,
    *,
    alpha: float = 0.1,
    beta: float = 1.0,
    update_probe: bool = True,
    mask: Any = None,
    probe_step: float = 1.0,
) -> tuple[Any, Any, float]:
    """One rPIE update at one scan position (the function the solver applies per position).

    Parameters
    ----------
    obj : complex array, shape (h, w)
        The object under the probe window.
    probe : complex array, shape (h, w)
        The probe (already moved by the position's sub-pixel part).
    amplitude : float array, shape (h, w)
        Measured far-field amplitude ``sqrt(I)`` in numpy's FFT layout (zero frequency at
        index 0), on the scale of ``fft2(psi, norm="ortho")``.
    alpha, beta : float
        rPIE regularisation of the object and probe updates (1: ePIE).
    update_probe : bool
        Also return an updated probe (else the probe given).
    mask : bool array, shape (h, w), optional
        Detector pixels that were measured; elsewhere the far field is left unconstrained.
    probe_step : float
        Fraction of the probe update applied (1: rPIE as published). With noisy frames
        every position's full step makes the probe follow that frame's noise; 0.1-0.3
        keeps it steady.

    Returns
    -------
    obj, probe : complex arrays
        Updated object window and probe (new arrays; the inputs are not modified).
    error : float
        ``sum((|Psi| - amplitude)^2)`` over the measured pixels, before the update.
    """
    mod = xp(obj)
    fft = fft_module(mod)
    psi = probe * obj
    far = fft.fft2(psi, norm="ortho")
    modulus = mod.abs(far)
    diff = modulus - amplitude
    if mask is not None:
        diff = diff * mask
    error = mod.sum(diff * diff)
    factor = amplitude / mod.maximum(modulus, _EPS)
    if mask is not None:
        factor = mod.where(mask, factor, 1.0)
    dpsi = fft.ifft2(far * factor.astype(far.real.dtype), norm="ortho") - psi
    p2 = (probe.real * probe.real + probe.imag * probe.imag)
    new_obj = obj + mod.conj(probe) * dpsi / ((1 - alpha) * p2 + alpha * p2.max())
    if update_probe:
        o2 = (obj.real * obj.real + obj.imag * obj.imag)
        probe = probe + (probe_step * mod.conj(obj)) * dpsi / (
            (1 - beta) * o2 + beta * o2.max())
    return new_obj.astype(obj.dtype, copy=False), probe.astype(obj.dtype, copy=False), error


def shift_ramp(mod: types.ModuleType, shape: tuple[int, int], frac: np.ndarray) -> Any:
    """Fourier phase ramp that moves a ``shape`` window's content by ``frac`` = (dy, dx) px
    (multiply the FFT by it); complex64."""
    h, w = shape
    qy = np.fft.fftfreq(h)[:, None]
    qx = np.fft.fftfreq(w)[None, :]
    ramp = np.exp(-2j * np.pi * (frac[0] * qy + frac[1] * qx)).astype(np.complex64)
    return mod.asarray(ramp)


def layout(probe: Any, positions: np.ndarray, object_shape: tuple[int, int] | None,
           *, subpixel: bool = True, obj: Any = None) -> tuple[Any, np.ndarray, np.ndarray,
                                                                Any]:
    """Check and place a solver's inputs: the probe (complex64 copy, ``(h, w)`` or modes
    ``(k, h, w)``), each window's whole-pixel corner and sub-pixel rest, and the object
    (complex64 copy of ``obj``, else ones) in the probe's array module."""
    mod = xp(probe)
    probe = mod.asarray(probe, dtype=np.complex64).copy()
    if probe.ndim not in (2, 3) or (probe.ndim == 3 and probe.shape[0] < 1):
        raise ValueError(f"probe: expected a 2D window or modes (k, h, w), found shape "
                         f"{probe.shape}")
    pos = np.asarray(positions, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or not np.isfinite(pos).all():
        raise ValueError(f"positions: expected finite (n, 2) object px, found shape "
                         f"{pos.shape}")
    if not subpixel:
        pos = np.round(pos)
    top = np.floor(pos + 1e-9).astype(np.int64)
    frac = np.where(np.abs(pos - top) < 1e-9, 0.0, pos - top)
    h, w = probe.shape[-2:]
    # a sub-pixel shift moves the probe inside its window (periodically, as the
    # synthetic data does): the window itself stays whole pixels
    need = (int(top[:, 0].max()) + h, int(top[:, 1].max()) + w)
    if top.min() < 0:
        raise ValueError(f"positions: a window starts outside the object (smallest "
                         f"corner {tuple(top.min(axis=0))}, expected >= 0)")
    if object_shape is None:
        object_shape = need if obj is None else np.shape(obj)
    if object_shape[0] < need[0] or object_shape[1] < need[1]:
        raise ValueError(f"object_shape {tuple(object_shape)}: the windows need at "
                         f"least {need}")
    if obj is None:
        obj = mod.ones(tuple(object_shape), np.complex64)
    else:
        obj = mod.asarray(obj, dtype=np.complex64).copy()
        if obj.shape != tuple(object_shape):
            raise ValueError(f"obj: expected shape {tuple(object_shape)}, found "
                             f"{obj.shape}")
    return probe, top, frac, obj


class RPIE:
    """rPIE/ePIE solver state: object, probe, positions, and the error per iteration.

    Arrays live where ``probe`` lives (numpy on the host, cupy on a GPU); everything is
    float32/complex64.

    Parameters
    ----------
    probe : complex array, shape (h, w) or (k, h, w)
        Initial probe on the detector-shaped window (its total intensity on the scale of
        the measured frames' sums); ``k`` mixed-state modes (see
        :func:`~framescope.ptycho.initial_modes`), kept orthogonal after every sweep that
        updates the probe.
    positions : array, shape (n, 2)
        Top-left corner ``(y, x)`` of each scan position's probe window on the object, in
        object px (float: the sub-pixel part moves the probe, see ``subpixel``); all
        windows must fit ``object_shape``.
    object_shape : (int, int), optional
        Default: the shape of ``obj``, else the smallest grid holding every window.
    alpha, beta : float
        rPIE regularisation of object and probe (``alpha = beta = 1``: ePIE).
    probe_start : int
        First iteration (0-based) that updates the probe.
    seed : int
        Seeds the random order of positions: every iteration draws a permutation of *all*
        positions and visits the measured ones in that order, so the order does not depend
        on which positions are measured yet (a live run is replayable offline).
    subpixel : bool
        Move the probe by each position's sub-pixel part with a Fourier phase ramp (two
        extra FFTs per update, four with the probe update); False rounds positions to
        whole pixels (error up to 0.5 px).
    obj : complex array, optional
        Initial object (default ones).
    """

    def __init__(self, probe: Any, positions: np.ndarray, object_shape: tuple[int, int] |
                 None = None, *, alpha: float = 0.1, beta: float = 1.0, probe_start: int = 0,
                 seed: int = 0, subpixel: bool = True, obj: Any = None,
                 probe_step: float = 1.0) -> None:
        if not 0 < probe_step <= 1:
            raise ValueError(f"probe_step: expected 0 < probe_step <= 1, found {probe_step}")
        self.xp = xp(probe)
        self.fft = fft_module(self.xp)
        self.probe, self.top, self.frac, self.object = layout(
            probe, positions, object_shape, subpixel=subpixel, obj=obj)
        self.alpha, self.beta, self.probe_step = float(alpha), float(beta), float(probe_step)
        self.probe_start, self.subpixel = int(probe_start), bool(subpixel)
        self.rng = np.random.default_rng(seed)
        self.errors: list[float] = []
        self.measured: list[int] = []

    @property
    def modes(self) -> int:
        """Probe modes (1 for a 2D probe)."""
        return 1 if self.probe.ndim == 2 else int(self.probe.shape[0])

    def parameters(self) -> dict[str, Any]:
        """The solver's parameters, for a result's attrs."""
        out = {"alpha": self.alpha, "beta": self.beta}
        if self.probe_step != 1:
            out["probe_step"] = self.probe_step
        return out

    @property
    def iteration(self) -> int:
        """Iterations done so far."""
        return len(self.errors)

    def _probe_at(self, j: int) -> tuple[Any, Any]:
        """The probe moved by position ``j``'s sub-pixel part, and the ramp (or None)."""
        frac = self.frac[j]
        if not frac.any():
            return self.probe, None
        ramp = shift_ramp(self.xp, self.probe.shape[-2:], frac)
        return self.fft.ifft2(self.fft.fft2(self.probe) * ramp), ramp

    def iterate(self, amplitudes: Any, measured: np.ndarray | None = None,
                mask: Any = None) -> float:
        """One sweep over the measured positions in random order; returns its error.

        Parameters
        ----------
        amplitudes : float32 array, shape (n, h, w)
            ``sqrt`` of the measured intensities in numpy's FFT layout, one per position
            (rows of unmeasured positions are never read).
        measured : bool array, shape (n,), optional
            Positions with data (weight 1); the others have weight 0: skipped. Default all.
        mask : bool array, shape (h, w), optional
            Measured detector pixels (default all).

        Returns
        -------
        float
            Normalised Fourier error ``sum_j sum_q (|Psi_j| - A_j)^2 / sum_j sum_q A_j^2``
            over the measured positions (and pixels), before this sweep's updates.
        """
        n = self.top.shape[0]
        frame = self.probe.shape[-2:]
        if amplitudes.shape[0] != n or amplitudes.shape[1:] != frame:
            raise ValueError(f"amplitudes: expected shape {(n, *frame)}, found "
                             f"{tuple(amplitudes.shape)}")
        measured = np.ones(n, bool) if measured is None else np.asarray(measured, bool)
        order = self.rng.permutation(n)  # of all positions: independent of `measured`
        order = order[measured[order]]
        update_probe = self.iteration >= self.probe_start
        h, w = frame
        step = rpie_step if self.probe.ndim == 2 else partial(rpie_modes_step, fft=self.fft)
        error = self.xp.zeros((), np.float64)
        total = self.xp.zeros((), np.float64)
        for j in order:
            y, x = self.top[j]
            window = (slice(y, y + h), slice(x, x + w))
            probe, ramp = self._probe_at(int(j))
            amp = amplitudes[j]
            new_obj, new_probe, err = step(
                self.object[window], probe, amp, alpha=self.alpha, beta=self.beta,
                update_probe=update_probe, mask=mask, probe_step=self.probe_step)
            self.object[window] = new_obj
            if update_probe:
                if ramp is None:
                    self.probe = new_probe
                else:  # move the update back to the unshifted probe
                    delta = self.fft.fft2(new_probe - probe) * self.xp.conj(ramp)
                    self.probe = self.probe + self.fft.ifft2(delta)
            error += err
            total += self.xp.sum((amp * mask) ** 2 if mask is not None else amp * amp)
        if update_probe and self.modes > 1 and len(order):
            self.probe, _ = orthogonalise(self.probe)
        value = float(to_host(error / total)) if len(order) else float("nan")
        self.errors.append(value)
        self.measured.append(len(order))
        return value
