"""Mixed-state probes (Thibault & Menzel 2013, Nature 494, 68): several mutually
incoherent probe modes ``P_k`` illuminate the same object, so a frame is the incoherent
sum ``I = sum_k |F(P_k O)|^2``.

A probe with modes is an array of shape ``(k, h, w)``, strongest mode first. The modulus
constraint scales every mode's far field by the same factor ``sqrt(I) / sqrt(sum_k
|Psi_k|^2)``; object and probe updates then run per mode. Modes are kept orthogonal (and
sorted by power) by diagonalising their overlap matrix, a unitary mixing that leaves the
intensity model unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framescope.udf._backend import to_host, xp

__all__ = ["fourier_project", "initial_modes", "mode_powers", "orthogonalise",
           "rpie_modes_step"]

_EPS = 1e-12  # modulus floor, as in the single-mode step

# (y, x) orders of the Hermite-like shapes that seed modes 2, 3, ...
_ORDERS = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (2, 2))


def _hermite(n: int, t: np.ndarray) -> np.ndarray:
    """Probabilists' Hermite polynomial He_n (n <= 2)."""
    return (np.ones_like(t), t, t * t - 1)[n]


def initial_modes(probe: Any, modes: int, power: float = 0.05) -> Any:
    """Mixed-state starting probe: ``probe`` and ``modes - 1`` weaker Hermite-like shapes.

    Mode ``m`` (m >= 1) is ``probe * He_a(y') * He_b(x')`` with ``y', x'`` the window
    coordinates in units of the probe's intensity-weighted width around its centroid,
    made orthogonal to the earlier modes (Gram-Schmidt) and scaled to ``power`` of the
    total; the first mode keeps the rest, so ``sum_k |P_k|^2`` stays ``sum |probe|^2``.

    Parameters
    ----------
    probe : complex array, shape (h, w)
        The single-mode probe (numpy or cupy; the result lives in the same module).
    modes : int
        Number of modes, 1 to 9.
    power : float
        Fraction of the total intensity in each extra mode.

    Returns
    -------
    complex64 array, shape (modes, h, w)
    """
    mod = xp(probe)
    p = np.asarray(to_host(probe), np.complex128)
    if p.ndim != 2:
        raise ValueError(f"probe: expected a 2D window to build modes from, found shape "
                         f"{p.shape}")
    if not 1 <= modes <= len(_ORDERS) + 1:
        raise ValueError(f"modes: expected 1 to {len(_ORDERS) + 1}, found {modes}")
    if not 0 < power * (modes - 1) < 1 and modes > 1:
        raise ValueError(f"power: expected 0 < power * (modes - 1) < 1, found {power} "
                         f"with {modes} modes")
    weight = np.abs(p) ** 2
    total = weight.sum()
    yy, xx = np.indices(p.shape, dtype=np.float64)
    cy, cx = (weight * yy).sum() / total, (weight * xx).sum() / total
    sy = np.sqrt((weight * (yy - cy) ** 2).sum() / total) or 1.0
    sx = np.sqrt((weight * (xx - cx) ** 2).sum() / total) or 1.0
    out = [p * np.sqrt(1 - power * (modes - 1))]
    basis = [p / np.sqrt(total)]
    for a, b in _ORDERS[:modes - 1]:
        shape = p * _hermite(a, (yy - cy) / sy) * _hermite(b, (xx - cx) / sx)
        for e in basis:  # Gram-Schmidt: orthogonal to the earlier modes
            shape = shape - np.vdot(e, shape) * e
        shape /= np.sqrt(np.sum(np.abs(shape) ** 2))
        basis.append(shape)
        out.append(shape * np.sqrt(power * total))
    return mod.asarray(np.stack(out).astype(np.complex64))


def mode_powers(probe: Any) -> np.ndarray:
    """``sum |P_k|^2`` of each mode (host float64, shape (k,)); a 2D probe is one mode."""
    p = probe if probe.ndim == 3 else probe[None]
    mod = xp(p)
    return np.asarray(to_host(mod.sum(p.real**2 + p.imag**2, axis=(-2, -1))), np.float64)


def orthogonalise(probe: Any) -> tuple[Any, Any]:
    """Orthogonal modes spanning the same mixed state, strongest first.

    With ``G = P P^H`` (``P`` the modes as rows) and ``G = V D V^H``, the new modes are
    ``U P`` with ``U = V^H`` (rows sorted by power, each row's phase chosen so its largest
    entry is real positive: already orthogonal modes come back unchanged up to rounding).
    ``sum_k P_k P_k^H`` and so every modelled frame are unchanged.

    Returns
    -------
    probe : complex64 array, shape (k, h, w)
    unitary : complex64 array, shape (k, k)
        ``U``: apply it to anything that is linear in the modes (exit waves).
    """
    mod = xp(probe)
    k = probe.shape[0]
    flat = probe.reshape(k, -1)
    gram = np.asarray(to_host(flat @ flat.conj().T), np.complex128)  # k x k, small
    _, vecs = np.linalg.eigh(gram)
    u = vecs[:, ::-1].conj().T
    big = np.abs(u).argmax(axis=1)
    lead = u[np.arange(k), big]
    u = u * (np.conj(lead) / np.abs(lead))[:, None]
    unitary = mod.asarray(u.astype(np.complex64))
    return (unitary @ flat).reshape(probe.shape), unitary


def fourier_project(far: Any, amplitude: Any, mask: Any = None) -> tuple[Any, Any]:
    """Mixed-state modulus projection of far fields with the mode axis at -3.

    Parameters
    ----------
    far : complex array, shape (..., k, h, w)
    amplitude : float array, shape (..., h, w)
        Measured ``sqrt(I)`` (numpy FFT layout).
    mask : bool array, shape (h, w), optional
        Measured detector pixels; elsewhere the far fields are kept.

    Returns
    -------
    projected : complex array like ``far``
        Every mode scaled by ``amplitude / sqrt(sum_k |far_k|^2)``.
    error : 0-d array
        ``sum (sqrt(sum_k |far_k|^2) - amplitude)^2`` over measured pixels.
    """
    mod = xp(far)
    modulus = mod.sqrt(mod.sum(far.real**2 + far.imag**2, axis=-3))
    diff = modulus - amplitude
    if mask is not None:
        diff = diff * mask
    factor = amplitude / mod.maximum(modulus, _EPS)
    if mask is not None:
        factor = mod.where(mask, factor, 1.0)
    projected = far * factor.astype(far.real.dtype)[..., None, :, :]
    return projected, mod.sum(diff * diff)


def rpie_modes_step(obj: Any, probe: Any, amplitude: Any, *, alpha: float = 0.1,
                    beta: float = 1.0, update_probe: bool = True, mask: Any = None,
                    fft: Any, probe_step: float = 1.0) -> tuple[Any, Any, Any]:
    """One rPIE update at one position with a mixed-state probe ``(k, h, w)``.

    As :func:`~framescope.ptycho.rpie_step`, with the intensity ``sum_k |Psi_k|^2``::

        O' = O + sum_k conj(P_k) dpsi_k / ((1 - alpha) S + alpha max S),  S = sum_k |P_k|^2
        P_k' = P_k + conj(O) dpsi_k / ((1 - beta) |O|^2 + beta max|O|^2)

    ``fft`` is the FFT module of the arrays (:func:`~framescope.ptycho._solver.fft_module`).
    Returns the new object window, the new probe and the error before the update.
    """
    mod = xp(obj)
    psi = probe * obj
    far = fft.fft2(psi, norm="ortho")
    projected, error = fourier_project(far, amplitude, mask)
    dpsi = fft.ifft2(projected, norm="ortho") - psi
    p2 = mod.sum(probe.real * probe.real + probe.imag * probe.imag, axis=0)
    step = mod.sum(mod.conj(probe) * dpsi, axis=0)
    new_obj = obj + step / ((1 - alpha) * p2 + alpha * p2.max())
    if update_probe:
        o2 = obj.real * obj.real + obj.imag * obj.imag
        probe = probe + (probe_step * mod.conj(obj)) * dpsi / (
            (1 - beta) * o2 + beta * o2.max())
    return new_obj.astype(obj.dtype, copy=False), probe.astype(obj.dtype, copy=False), error
