"""FFT downsampling: frames resampled on a coarser grid by cropping their spectrum.

For a frame ``x`` of ``h x w`` and an output of ``h_out x w_out``, the kept frequencies are
those of the output grid, ``-h_out/2 <= k_y < h_out/2`` and likewise in x: the
low-frequency centre of the spectrum. The output is their inverse transform on the coarse
grid (``irfft2``'s ``1 / (h_out w_out)``), so the sum of the frame (its zero frequency) is
preserved: values are ``h w / (h_out w_out)`` times those of a value-preserving resampling
and grow like binned ones (a factor 2 on each axis makes them about 4 times larger, as
``bin=2`` does).

Output pixel ``m`` samples the band-limited frame at input pixel ``m * h / h_out`` (pixel 0
stays at pixel 0: a binned pixel ``m`` sits at ``m k + (k - 1) / 2`` instead). A frame whose
spectrum lies strictly inside the kept band is reproduced exactly on the coarse grid.

The Nyquist row (``h_out`` even) and column (``w_out`` even): the frequencies ``+h_out/2``
and ``-h_out/2`` of the input fall on one output frequency. Each is kept with weight 1/2
(their mean), axis by axis: the real, zero-phase low-pass filter that commutes with mirroring
the frame, applied along y and then along x. Per axis this is the real part of
``ifft(centred crop of fftshift(fft(x)))``; in 2D it differs from the real part of the
centred 2D crop only at the corner frequency (±h_out/2, ±w_out/2), where the 2D crop keeps
one diagonal pair of the four and so does not commute with mirroring.

It runs on numpy or cupy arrays alike (``rfft2``/``irfft2`` of the array's module).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fft_downsample", "fft_grid"]


def fft_grid(n: int, m: int) -> np.ndarray:
    """Where the ``m`` output pixels of an axis of ``n`` pixels sample it: ``i * n / m``."""
    return np.arange(m) * (n / m)


def _module(a: Any) -> Any:
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def fft_downsample(frames: Any, shape: tuple[int, int]) -> Any:
    """Frames resampled to ``shape`` by cropping their spectrum, their sums preserved.

    Parameters
    ----------
    frames : ndarray (..., h, w), numpy or cupy
        Real frames (float32 stays float32).
    shape : (int, int)
        Output shape ``(h_out, w_out)``, each at most the input's.

    Returns
    -------
    ndarray (..., h_out, w_out)
        A new array on the frames' device (the input itself when ``shape`` is its shape).

    Examples
    --------
    >>> x = np.arange(16.0).reshape(4, 4)
    >>> y = fft_downsample(x, (2, 2))
    >>> y.shape, float(y.sum())
    ((2, 2), 120.0)
    """
    h, w = frames.shape[-2:]
    ho, wo = shape
    if (ho, wo) == (h, w):
        return frames
    xp = _module(frames)
    spec = xp.fft.rfft2(frames)  # (..., h, w // 2 + 1)
    cols = wo // 2 + 1
    pos = (ho + 1) // 2  # rows of frequencies 0 .. ceil(ho/2) - 1; the rest negative
    z = xp.empty((*spec.shape[:-2], ho, cols), spec.dtype)
    z[..., :pos, :] = spec[..., :pos, :cols]
    if ho > pos:
        z[..., pos:, :] = spec[..., h - (ho - pos):, :cols]
    if ho % 2 == 0 and ho < h:  # the Nyquist row: the mean of +ho/2 and -ho/2
        z[..., ho // 2, :] = (spec[..., ho // 2, :cols] + spec[..., h - ho // 2, :cols]) / 2
    if wo % 2 == 0 and wo < w:
        # the Nyquist column: the mean of +wo/2 and -wo/2; X(ky, -wo/2) = conj X(-ky, wo/2)
        rev = (-np.arange(ho)) % ho
        z[..., wo // 2] = (z[..., wo // 2] + xp.conj(z[..., rev, wo // 2])) / 2
    out = xp.fft.irfft2(z, s=(ho, wo))
    return out.astype(frames.dtype if frames.dtype.kind == "f" else np.float64, copy=False)
