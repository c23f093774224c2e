"""RAAR (and the difference map) on all positions at once, with the array module of its
inputs.

The state is one exit wave per measured position and probe mode, ``psi_jk``. An
iteration (Luke 2005, Inverse Problems 21, 37, in the form ptychography uses; the
difference map of Thibault et al. 2008, Science 321, 379 and 2009, Ultramicroscopy 109,
338 is ``beta = 1``)::

    psi' = beta/2 (R_F R_O + I) psi + (1 - beta) P_O psi
         = beta (psi + P_F(2 P_O psi - psi) - P_O psi) + (1 - beta) P_O psi

with reflections ``R = 2P - I`` and two projections:

* ``P_O`` (overlap): object and probe that best explain all exit waves, by alternating
  the closed-form least-squares updates (``overlap_iterations`` times; a small
  regulariser keeps the previous value where nothing is illuminated)::

      O = (sum_jk conj(P_jk) psi_jk + r O) / (sum_jk |P_jk|^2 + r)
      P_k = (sum_j conj(O_j) psi_jk + r P_k) / (sum_j |O_j|^2 + r)

  then ``P_O psi_jk = P_jk O_j`` (``P_jk``: mode ``k`` moved by position ``j``'s
  sub-pixel part; ``O_j``: the object under window ``j``).
* ``P_F`` (Fourier modulus): every mode's far field scaled by ``sqrt(I_j) / sqrt(sum_k
  |Psi_jk|^2)``; detector pixels outside ``mask`` keep theirs.

Note the sign of the ``(1 - beta)`` term: it projects with ``P_O``, the projection whose
reflection acts first, as Luke's relaxation does (``P_M`` there, with ``R_S R_M``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framescope.ptycho._modes import fourier_project, initial_modes, orthogonalise
from framescope.ptycho._solver import RPIE, fft_module, layout
from framescope.udf._backend import to_host, xp

__all__ = ["RAAR", "make_solver"]

_BLOCK = 1 << 21  # complex elements per block of positions (16 MiB): bounds temporaries


class RAAR:
    """RAAR / difference-map solver state: exit waves, object, probe, error per iteration.

    Same interface as :class:`~framescope.ptycho.RPIE`; arrays live where ``probe`` lives
    (numpy or cupy), all complex64/float32. Memory: the exit waves, ``n_positions * k *
    h * w`` complex64 (8 bytes each: a 64x64 scan of 128x128 frames with one mode holds
    512 MiB), plus temporaries bounded by blocks of ~16 MiB.

    Parameters
    ----------
    probe : complex array, shape (h, w) or (k, h, w)
        Initial probe (``k`` mixed-state modes, kept orthogonal every iteration that
        updates the probe).
    positions : array, shape (n, 2)
        Top-left window corners on the object, object px (sub-pixel parts move the probe
        by a Fourier phase ramp; in the probe's least-squares update the shift is undone
        on the numerator only, exact for whole-pixel positions).
    object_shape : (int, int), optional
        Default: the shape of ``obj``, else the smallest grid holding every window.
    beta : float
        Relaxation, in (0, 1]; 1 is the difference map.
    probe_start : int
        First iteration (0-based) that updates the probe.
    overlap_iterations : int
        Object/probe alternations of the overlap projection (1 when the probe is fixed).
    regulariser : float
        ``r`` of the overlap projection relative to the largest weight (``max sum
        |P|^2`` for the object, ``max sum |O|^2`` for the probe).
    subpixel : bool
        Sub-pixel positions by Fourier-shifting the probe (else rounded).
    obj : complex array, optional
        Initial object (default ones).
    seed : int
        Unused (every position takes part at once; no random order): accepted so both
        solvers take the same arguments.
    """

    def __init__(self, probe: Any, positions: np.ndarray, object_shape: tuple[int, int] |
                 None = None, *, beta: float = 0.75, probe_start: int = 0,
                 overlap_iterations: int = 3, regulariser: float = 1e-3,
                 subpixel: bool = True, obj: Any = None, seed: int = 0) -> None:
        if not 0 < beta <= 1:
            raise ValueError(f"beta: expected 0 < beta <= 1, found {beta}")
        if overlap_iterations < 1:
            raise ValueError(f"overlap_iterations: expected >= 1, found "
                             f"{overlap_iterations}")
        self.xp = xp(probe)
        self.fft = fft_module(self.xp)
        probe, self.top, self.frac, self.object = layout(
            probe, positions, object_shape, subpixel=subpixel, obj=obj)
        self._flat = probe.ndim == 2  # give back the probe as it came
        self._probe = probe[None] if self._flat else probe
        self.beta, self.overlap_iterations = float(beta), int(overlap_iterations)
        self.regulariser = float(regulariser)
        self.probe_start, self.subpixel, self.seed = int(probe_start), bool(subpixel), seed
        n = self.top.shape[0]
        self.psi = self.xp.zeros((n, *self._probe.shape), np.complex64)
        self.started = np.zeros(n, bool)  # positions whose exit waves exist
        self.errors: list[float] = []
        self.measured: list[int] = []

    @property
    def probe(self) -> Any:
        """The probe: ``(h, w)`` if it was given so, else the modes ``(k, h, w)``."""
        return self._probe[0] if self._flat else self._probe

    @property
    def modes(self) -> int:
        """Probe modes."""
        return int(self._probe.shape[0])

    @property
    def iteration(self) -> int:
        """Iterations done so far."""
        return len(self.errors)

    def parameters(self) -> dict[str, Any]:
        """The solver's parameters, for a result's attrs."""
        return {"raar_beta": self.beta, "overlap_iterations": self.overlap_iterations}

    def _blocks(self, idx: np.ndarray) -> list[np.ndarray]:
        per = max(1, _BLOCK // self._probe.size)
        return [idx[i:i + per] for i in range(0, idx.size, per)]

    def _ramps(self, block: np.ndarray) -> Any:
        """Fourier phase ramps moving the probe by each position's sub-pixel part
        ``(b, 1, h, w)``, or None when the block has no sub-pixel part."""
        frac = self.frac[block]
        if not frac.any():
            return None
        h, w = self._probe.shape[-2:]
        qy = np.fft.fftfreq(h)[None, :, None]
        qx = np.fft.fftfreq(w)[None, None, :]
        ramp = np.exp(-2j * np.pi * (frac[:, 0, None, None] * qy + frac[:, 1, None, None] * qx))
        return self.xp.asarray(ramp.astype(np.complex64))[:, None]

    def _probes(self, ramps: Any) -> Any:
        """Probe modes at each position of a block: ``(b, k, h, w)`` or ``(1, k, h, w)``."""
        if ramps is None:
            return self._probe[None]
        return self.fft.ifft2(self.fft.fft2(self._probe)[None] * ramps)

    def _windows(self, block: np.ndarray) -> Any:
        """The object under each window of a block, ``(b, 1, h, w)``."""
        h, w = self._probe.shape[-2:]
        yy = self.xp.asarray(self.top[block, 0, None, None] + np.arange(h)[None, :, None])
        xx = self.xp.asarray(self.top[block, 1, None, None] + np.arange(w)[None, None, :])
        return self.object[yy, xx][:, None]

    def _scatter(self, target: Any, block: np.ndarray, values: Any) -> None:
        h, w = self._probe.shape[-2:]
        for (y, x), v in zip(self.top[block], values, strict=True):
            target[y:y + h, x:x + w] += v

    def _overlap(self, idx: np.ndarray, update_probe: bool) -> None:
        """``P_O``: object (and probe) from the exit waves of positions ``idx``."""
        mod = self.xp
        blocks = self._blocks(idx)
        for _ in range(self.overlap_iterations if update_probe else 1):
            num = mod.zeros(self.object.shape, np.complex64)
            den = mod.zeros(self.object.shape, np.float32)
            for block in blocks:
                probes = self._probes(self._ramps(block))
                psi = self.psi[self.xp.asarray(block)]
                self._scatter(num, block, mod.sum(mod.conj(probes) * psi, axis=1))
                p2 = mod.sum(probes.real**2 + probes.imag**2, axis=1)
                self._scatter(den, block, mod.broadcast_to(p2, (block.size, *p2.shape[1:])))
            reg = self.regulariser * float(den.max())
            self.object = ((num + reg * self.object) / (den + reg)).astype(np.complex64)
            if not update_probe:
                break
            num_p = mod.zeros(self._probe.shape, np.complex64)
            den_p = mod.zeros(self._probe.shape[-2:], np.float32)
            for block in blocks:
                ramps = self._ramps(block)
                win = self._windows(block)
                part = mod.conj(win) * self.psi[mod.asarray(block)]
                if ramps is not None:  # back to the unshifted probe's frame
                    part = self.fft.ifft2(self.fft.fft2(part) * mod.conj(ramps))
                num_p += part.sum(axis=0)
                den_p += mod.sum(win.real**2 + win.imag**2, axis=(0, 1))
            reg = self.regulariser * float(den_p.max())
            self._probe = ((num_p + reg * self._probe) / (den_p + reg)).astype(np.complex64)

    def iterate(self, amplitudes: Any, measured: np.ndarray | None = None,
                mask: Any = None) -> float:
        """One RAAR iteration over all measured positions at once; returns its error.

        Positions measured for the first time start with the exit waves of the current
        object and probe (``P_jk O_j``): a live run adds positions between iterations.

        Parameters
        ----------
        amplitudes : float32 array, shape (n, h, w)
            ``sqrt`` of the measured intensities in numpy's FFT layout (rows of unmeasured
            positions are never read).
        measured : bool array, shape (n,), optional
            Positions with data; the others take no part. Default all.
        mask : bool array, shape (h, w), optional
            Measured detector pixels (default all).

        Returns
        -------
        float
            Normalised Fourier error ``sum_j sum_q (sqrt(sum_k |Psi_jk|^2) - A_j)^2 /
            sum_j sum_q A_j^2`` of the object and probe this iteration's overlap
            projection made (those :attr:`object` and :attr:`probe` hold afterwards).
        """
        mod, fft = self.xp, self.fft
        n = self.top.shape[0]
        frame = self._probe.shape[-2:]
        if amplitudes.shape[0] != n or tuple(amplitudes.shape[1:]) != frame:
            raise ValueError(f"amplitudes: expected shape {(n, *frame)}, found "
                             f"{tuple(amplitudes.shape)}")
        measured = np.ones(n, bool) if measured is None else np.asarray(measured, bool)
        if measured.shape != (n,):
            raise ValueError(f"measured: expected shape {(n,)}, found {measured.shape}")
        idx = np.flatnonzero(measured)
        if not idx.size:
            self.errors.append(float("nan"))
            self.measured.append(0)
            return float("nan")
        for block in self._blocks(idx[~self.started[idx]]):  # new: P O
            self.psi[mod.asarray(block)] = self._probes(self._ramps(block)) * self._windows(block)
        self.started[idx] = True
        update_probe = self.iteration >= self.probe_start
        self._overlap(idx, update_probe)
        if update_probe and self.modes > 1:
            self._probe, unitary = orthogonalise(self._probe)
            for block in self._blocks(np.flatnonzero(self.started)):
                at = mod.asarray(block)
                psi = self.psi[at]  # mix the modes of every exit wave: (k, k) @ (k, h*w)
                self.psi[at] = (unitary @ psi.reshape(*psi.shape[:2], -1)).reshape(psi.shape)
        error = mod.zeros((), np.float64)
        total = mod.zeros((), np.float64)
        b = self.beta
        for block in self._blocks(idx):
            at = mod.asarray(block)  # a device index for cupy
            amp = amplitudes[at]
            psi = self.psi[at]
            exit_o = self._probes(self._ramps(block)) * self._windows(block)  # P_O psi
            _, err = fourier_project(fft.fft2(exit_o, norm="ortho"), amp, mask)
            far, _ = fourier_project(fft.fft2(2 * exit_o - psi, norm="ortho"), amp, mask)
            p_f = fft.ifft2(far, norm="ortho")
            self.psi[at] = b * (psi + p_f - exit_o) + (1 - b) * exit_o
            error += err
            total += mod.sum((amp * mask) ** 2 if mask is not None else amp * amp)
        value = float(to_host(error / total))
        self.errors.append(value)
        self.measured.append(int(idx.size))
        return value


def make_solver(options: dict[str, Any]) -> Callable[..., RPIE | RAAR]:
    """A constructor with :class:`~framescope.ptycho.RPIE`'s arguments that builds the
    solver ``options["algorithm"]`` names (``"raar"``/``"dm"``: :class:`RAAR` with
    ``options["raar_beta"]``; ``alpha``/``beta`` are then unused), with
    ``options["modes"]`` probe modes grown from a 2D probe by
    :func:`~framescope.ptycho.initial_modes`."""

    def build(probe: Any, positions: np.ndarray, object_shape: tuple[int, int] | None = None,
              *, alpha: float = 0.1, beta: float = 1.0, probe_start: int = 0, seed: int = 0,
              subpixel: bool = True, obj: Any = None) -> RPIE | RAAR:
        modes = int(options.get("modes", 1))
        if modes > 1 and probe.ndim == 2:
            probe = initial_modes(probe, modes)
        if options["algorithm"] in ("raar", "dm"):
            return RAAR(probe, positions, object_shape, beta=options["raar_beta"],
                        probe_start=probe_start, subpixel=subpixel, obj=obj, seed=seed)
        return RPIE(probe, positions, object_shape, alpha=alpha, beta=beta,
                    probe_start=probe_start, seed=seed, subpixel=subpixel, obj=obj,
                    probe_step=float(options.get("probe_step", 1.0)))

    return build
