"""Per-image robust statistics and the invertible normalization built on them.

The model should see every image on the same footing — background ≈ 0, noise σ ≈ 1 — whatever
the telescope's units, and every output must go back to physical units exactly. So each image
plane gets, at index time, two numbers stored in the manifest:

- ``offset``: the median of its finite pixels (the sky background, robust to sources);
- ``noise``: σ of the pixel noise, ``1.4826 · MAD(d) / √2`` where ``d`` are differences of
  horizontally adjacent pixels. Differencing removes smooth structure (sky gradients, extended
  sources); MAD ignores the few differences that straddle a star; 1.4826 turns a Gaussian MAD
  into σ and √2 undoes the variance doubling of a difference.

When that estimate is zero or not finite (noise-free or heavily quantized data such as
scikit-learn digits, constant images) the fallbacks are, in order: the header's ``NOISE``
keyword; for integer data the quantization noise ``BSCALE/√12``; the standard deviation of the
differences ``/√2``; 1.0. The manifest records which one was used (``noise_source``).

Normalization (``data.normalization``): ``robust`` is ``x = (p - offset) / scale`` with
``scale = noise``; ``asinh`` follows it with ``a·asinh(x/a)``; ``none`` keeps physical units
(offset 0, scale 1). :func:`denormalize` is the exact inverse; offset and scale travel in every
batch as float32, and the forward transform uses those same float32 values, so the round trip is
exact up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MAD_TO_SIGMA", "PlaneStats", "robust_stats", "image_parameters", "denormalize", "normalize", "standardize",
           "stretch"]

MAD_TO_SIGMA = 1.482602218505602


@dataclass(frozen=True)
class PlaneStats:
    offset: float
    noise: float
    noise_source: str  # "mad", "header", "quantization", "std", "unit"
    n_masked: int
    n_pixels: int


def _differences(plane: np.ndarray) -> np.ndarray:
    data = np.asarray(plane, dtype=np.float64)
    axis = 1 if data.shape[1] > 1 else 0
    d = np.diff(data, axis=axis).ravel()
    return d[np.isfinite(d)]


def robust_stats(plane: np.ndarray, header_noise: float | None = None,
                 quantum: float | None = None) -> PlaneStats:
    """Median and noise σ of one image plane (see the module docstring for the fallbacks).

    Parameters
    ----------
    plane : ndarray, 2-D
        Physical pixel values (NaN/Inf mark missing pixels).
    header_noise : float, optional
        The header's ``NOISE`` keyword, if any.
    quantum : float, optional
        The quantization step of integer data (``|BSCALE|``); None for float data.

    Raises
    ------
    ValueError
        If no pixel is finite.
    """
    data = np.asarray(plane)
    n_pixels = int(data.size)
    finite = np.isfinite(data) if data.dtype.kind == "f" else np.ones(data.shape, bool)
    n_finite = int(finite.sum())
    if n_finite == 0:
        raise ValueError(f"all {n_pixels} pixels are NaN, Inf or BLANK")
    values = data[finite].astype(np.float64)
    offset = float(np.median(values))
    d = _differences(data)
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2) if d.size else 0.0
    if sigma > 0 and math.isfinite(sigma):
        source = "mad"
    elif header_noise is not None and header_noise > 0 and math.isfinite(header_noise):
        sigma, source = float(header_noise), "header"
    elif quantum:
        sigma, source = abs(float(quantum)) / math.sqrt(12), "quantization"
    elif d.size and float(np.std(d)) > 0:
        sigma, source = float(np.std(d)) / math.sqrt(2), "std"
    else:
        sigma, source = 1.0, "unit"
    return PlaneStats(offset, sigma, source, n_pixels - n_finite, n_pixels)


def image_parameters(offset: float, noise: float, normalization: str) -> tuple[np.float32, np.float32, np.float32]:
    """``(offset, scale, noise_in_normalized_units)`` of one image, as the float32 the batches carry."""
    if normalization == "none":
        return np.float32(0.0), np.float32(1.0), np.float32(noise)
    off, scale = np.float32(offset), np.float32(noise)
    return off, scale, np.float32(np.float64(noise) / np.float64(scale))


def _expand(v, ndim, xp):
    return xp.reshape(v, [-1] + [1] * (ndim - 1)) if ndim > 1 else v


def normalize(p, offset, scale, cfg):
    """Physical pixels → model input (TensorFlow). ``offset``/``scale`` broadcast over ``p``."""
    return stretch(standardize(p, offset, scale), cfg)


def standardize(p, offset, scale):
    """The affine part of :func:`normalize`: ``(p - offset) / scale`` (TensorFlow).

    A subtraction and a division, each correctly rounded: identical under XLA and plain
    TensorFlow, so the pipeline may compile it into its decode kernel.
    """
    import tensorflow as tf

    return (p - tf.cast(offset, p.dtype)) / tf.cast(scale, p.dtype)


def stretch(x, cfg):
    """The non-linear part of :func:`normalize` (``asinh``), applied to standardized pixels."""
    import tensorflow as tf

    if cfg.normalization == "asinh":
        a = tf.cast(cfg.asinh_softening, x.dtype)
        x = a * tf.math.asinh(x / a)
    return x


def denormalize(x, offset, scale, cfg):
    """Model output (normalized) → physical units; the exact inverse of the pipeline's transform.

    Parameters
    ----------
    x : tf.Tensor or ndarray, shape (B, ...) or (...)
        Normalized values (a batch's ``"x"`` or a model's mean prediction).
    offset, scale : tf.Tensor or ndarray, shape (B,) or scalar
        The batch's ``"offset"`` and ``"scale"``.
    cfg : DataConfig
        Supplies ``normalization`` and ``asinh_softening``.

    Notes
    -----
    Noise σ in physical units is ``noise * scale`` for ``robust``; a predicted σ map ``s`` in
    normalized units maps to ``s * scale`` (for ``asinh`` only near the background, where the
    stretch is linear).
    """
    import tensorflow as tf

    if tf.is_tensor(x):
        ndim = x.shape.rank
        offset = tf.cast(tf.convert_to_tensor(offset), x.dtype)
        scale = tf.cast(tf.convert_to_tensor(scale), x.dtype)
        if offset.shape.rank:
            offset = _expand(offset, ndim, tf)
        if scale.shape.rank:
            scale = _expand(scale, ndim, tf)
        if cfg.normalization == "asinh":
            a = tf.cast(cfg.asinh_softening, x.dtype)
            x = a * tf.math.sinh(x / a)
        return x * scale + offset
    x = np.asarray(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.float64
    offset, scale = np.asarray(offset, dtype), np.asarray(scale, dtype)
    if offset.ndim:
        offset = _expand(offset, x.ndim, np)
    if scale.ndim:
        scale = _expand(scale, x.ndim, np)
    if cfg.normalization == "asinh":
        a = np.dtype(dtype).type(cfg.asinh_softening)
        x = a * np.sinh(x / a)
    return x * scale + offset
