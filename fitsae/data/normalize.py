"""Per-image robust statistics and the invertible normalization built on them.

Contract: each image plane gets two numbers at index time, kept in the manifest: ``median`` (of
its finite pixels: the background, robust to sources) and ``noise`` (σ of the pixel noise, from
``data.noise``, else the header's ``NOISE``, else :func:`noise_estimate`). The model sees
``(p − offset) / scale`` with ``offset`` = median and ``scale`` = noise (``robust``), followed by
``a·asinh(x/a)`` (``asinh``), or the physical pixels untouched (``none``: offset 0, scale 1).
:func:`denormalize` is the exact inverse, up to float rounding, because offset and scale travel
in every batch as the very float32 values the forward transform used.

Why: the model should see every image on one footing (background ≈ 0, noise ≈ 1) whatever the
telescope's units, and every output must go back to physical units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MAD_TO_SIGMA", "PlaneStats", "robust_stats", "noise_estimate", "image_parameters", "denormalize",
           "sigma_to_physical", "sigma_to_physical_first_order", "decoded_sigma", "normalize", "standardize",
           "stretch"]

MAD_TO_SIGMA = 1.482602218505602
_SIGMA_CAP = 6.0  # largest σ/a taken through the stretch exactly (sigma_to_physical)
# cfitsio's 5th-order difference, on pixels two apart (FnNoise5 in cfitsio's quantize.c).
_DIFF5 = (1.0, -4.0, 6.0, -4.0, 1.0)
_DIFF5_SPAN = 2 * (len(_DIFF5) - 1) + 1
_DIFF5_NORM = sum(c * c for c in _DIFF5)


@dataclass(frozen=True)
class PlaneStats:
    median: float
    noise: float
    noise_source: str  # "config", "header", "diff5", "quantization", "std", "unit"
    n_masked: int
    n_pixels: int


def _differences(plane: np.ndarray) -> np.ndarray:
    """The 5th-order differences along rows (along the flattened plane when rows are too short)."""
    data = np.asarray(plane, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < _DIFF5_SPAN:
        data = data.reshape(1, -1)
    n = data.shape[1] - _DIFF5_SPAN + 1
    if n < 1:
        return np.zeros(0)
    d = sum(c * data[:, 2 * k:2 * k + n] for k, c in enumerate(_DIFF5))
    window = [data[:, j:j + n] for j in range(_DIFF5_SPAN)]
    constant = np.logical_and.reduce([w == window[0] for w in window[1:]])
    keep = np.isfinite(d) & ~constant
    return d[keep]


def _grouped_median_abs(counts: np.ndarray) -> float:
    """Median of ``|k + u|``, u ~ U(−½, ½), for integers ``k`` (the grouped-data median of |k|)."""
    values, n = np.unique(counts, return_counts=True)
    weight = n / n.sum()

    def below(t):  # P(|k + u| ≤ t), piecewise linear and increasing in t
        return float(np.sum(weight * np.clip(np.minimum(values + 0.5, t) - np.maximum(values - 0.5, -t), 0.0, 1.0)))

    lo, hi = 0.0, float(np.abs(values).max()) + 0.5
    for _ in range(60):  # bisection to far below float64 resolution of the answer
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if below(mid) < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def noise_estimate(plane: np.ndarray, quantum: float | None = None) -> tuple[float, np.ndarray]:
    """σ of the pixel noise from 5th-order differences, and the differences.

    cfitsio's estimate (``FnNoise5``, used by fpack): differences
    ``d = v[i] − 4v[i+2] + 6v[i+4] − 4v[i+6] + v[i+8]`` along rows cancel any cubic background and
    stars wider than a few pixels, and ``σ = 1.4826 · median|d| / √70`` ignores the few that
    straddle a star; windows of nine identical pixels (padding, saturation) are left out. On
    integer data the plain median of ``|d|`` moves in steps of a count, so there the median is
    taken of ``d`` spread uniformly over each count (the grouped-data median) and the rounding
    variance is subtracted: ``σ² = (σ_d² − (70 − 1)·q²/12) / 70``. That holds while the rounding
    error is uniform, i.e. for σ above about half a count.

    Parameters
    ----------
    plane : ndarray, 2-D
        Physical pixel values; non-finite pixels spoil only the differences they enter.
    quantum : float, optional
        The step of integer data in physical units (``|BSCALE|``); None for float data.

    Returns
    -------
    sigma : float
        0.0 when there are no usable differences or the noise is below the quantization floor.
    differences : ndarray
        The differences used (for the fallbacks).
    """
    d = _differences(plane)
    if d.size == 0:
        return 0.0, d
    if not quantum:
        return MAD_TO_SIGMA * float(np.median(np.abs(d))) / math.sqrt(_DIFF5_NORM), d
    q = abs(float(quantum))
    spread = (MAD_TO_SIGMA * _grouped_median_abs(np.rint(d / q))) ** 2
    variance = (spread - (_DIFF5_NORM - 1.0) / 12.0) / _DIFF5_NORM
    return q * math.sqrt(variance) if variance > 0 else 0.0, d


def _usable(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def robust_stats(plane: np.ndarray, header_noise: float | None = None,
                 quantum: float | None = None, noise: float | None = None) -> PlaneStats:
    """Median and noise σ of one image plane.

    σ is taken in this order from: ``noise``; ``header_noise``; :func:`noise_estimate`; and, when
    that is zero or not finite (noise-free data such as scikit-learn digits, constant images),
    for integer data the quantization noise ``q/√12``, else the standard deviation of the
    differences ``/√70``, else 1.0. ``noise_source`` says which: ``config``, ``header``,
    ``diff5``, ``quantization``, ``std`` or ``unit``.

    Parameters
    ----------
    plane : ndarray, 2-D
        Physical pixel values (NaN/Inf mark missing pixels).
    header_noise : float, optional
        The header's ``NOISE`` keyword, if any; used before any estimate.
    quantum : float, optional
        The quantization step of integer data (``|BSCALE|``); None for float data, which are
        treated as integer data of step 1 when every finite value is an integer.
    noise : float, optional
        An explicit σ (``data.noise``); used before everything else.

    Raises
    ------
    ValueError
        If no pixel is finite.
    """
    data = np.asarray(plane)
    n_pixels = int(data.size)
    finite = np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else np.ones(data.shape, bool)
    n_finite = int(finite.sum())
    if n_finite == 0:
        raise ValueError(f"all {n_pixels} pixels are NaN, Inf or BLANK")
    values = data[finite].astype(np.float64)
    median = float(np.median(values))
    if quantum is None and np.issubdtype(data.dtype, np.floating) and np.array_equal(values, np.rint(values)):
        quantum = 1.0

    def stats(sigma, source):
        return PlaneStats(median, float(sigma), source, n_pixels - n_finite, n_pixels)

    if _usable(noise):
        return stats(noise, "config")
    if _usable(header_noise):
        return stats(header_noise, "header")
    sigma, d = noise_estimate(data, quantum)
    if _usable(sigma):
        return stats(sigma, "diff5")
    if quantum:
        return stats(abs(float(quantum)) / math.sqrt(12), "quantization")
    if d.size and float(np.std(d)) > 0:
        return stats(float(np.std(d)) / math.sqrt(_DIFF5_NORM), "std")
    return stats(1.0, "unit")


def image_parameters(offset: float, noise: float, normalization: str) -> tuple[np.float32, np.float32, np.float32]:
    """``(offset, scale, noise_in_normalized_units)`` of one image, as the float32 the batches carry."""
    if normalization == "none":
        return np.float32(0.0), np.float32(1.0), np.float32(noise)
    off, scale = np.float32(offset), np.float32(noise)
    return off, scale, np.float32(np.float64(noise) / np.float64(scale))


def _expand(v, ndim, xp):
    return xp.reshape(v, [-1] + [1] * (ndim - 1)) if ndim > 1 else v


def normalize(p, offset, scale, cfg):
    """Physical pixels → model input. ``offset``/``scale`` broadcast over ``p``.

    A tensor goes through TensorFlow (:func:`standardize`, :func:`stretch`: what the pipeline and
    the encoder feed the model); a numpy array through numpy in its own precision, so a decoded
    physical value can be placed on the model's scale. ``none`` returns ``p`` untouched:
    no arithmetic at all, so float32 data reach the model bit for bit (subnormals and −0.0
    included; TensorFlow's CPU kernels would flush subnormals to zero in an ``(x − 0) / 1``).
    """
    if cfg.normalization == "none":
        return p
    if isinstance(p, np.ndarray):
        x = (p - offset) / scale
        if cfg.normalization == "asinh":
            x = cfg.asinh_softening * np.arcsinh(x / cfg.asinh_softening)
        return x
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


def sigma_to_physical(sigma, mu, scale, cfg) -> np.ndarray:
    """A predicted σ (normalized units) in physical units: the RMS of the physical error about μ.

    Evaluation and decompress's ``SIGMA`` plane call it. σ·scale for an affine normalization.
    For ``asinh`` (x = a·sinh(y/a)) the model's N(μ, σ²) in the stretched space is taken through
    the inverse stretch exactly: with m = μ/a, s = σ/a and E(t) = e^t − 1,

        E[(a·sinh(Y/a) − a·sinh(m))²] = a²·[cosh²m·E(2s²)/2 + sinh²m·(E(2s²)/2 − 2·E(s²/2))],

    both terms non-negative (written so, with ``expm1``, to keep precision as s → 0). To first
    order in s it is σ·cosh(μ/a) (:func:`sigma_to_physical_first_order`); it grows faster where
    σ is a sizeable part of a, which is where a model that is unsure of a star's presence is: the
    first order there misses that a stretched error of one softening is a factor e in brightness.
    ``mu`` is the mean in normalized units (a physical mean goes through :func:`normalize` first).
    s is capped at 6 (a factor e⁶ ≈ 400 of brightness) to keep the result finite.
    ``none`` keeps σ. numpy in, float64 out; ``scale`` is (B,) or a scalar.
    """
    sigma = np.asarray(sigma, np.float64)
    if cfg.normalization != "asinh":
        return sigma_to_physical_first_order(sigma, mu, scale, cfg)
    a = float(cfg.asinh_softening)
    m = np.asarray(mu, np.float64) / a
    s2 = np.square(np.minimum(sigma / a, _SIGMA_CAP))
    half_e2 = 0.5 * np.expm1(2.0 * s2)
    beyond_slope = np.maximum(half_e2 - 2.0 * np.expm1(0.5 * s2), 0.0)
    variance = np.square(np.cosh(m)) * half_e2 + np.square(np.sinh(m)) * beyond_slope
    return _times_scale(a * np.sqrt(variance), scale)


def decoded_sigma(sigma, mu_phys, offset, scale, lo, hi, cfg) -> np.ndarray:
    """The σ of decoded pixels in physical units, as ``fitsae decompress --sigma`` writes it.

    The model's σ (normalized units) taken through the stretch at the decoded μ
    (:func:`sigma_to_physical`), capped at max(hi − μ, μ − lo). Every original pixel of a tile lies
    in its range [lo, hi] (the container's ``LO``/``HI``: the tile's minimum and maximum) and the
    decoder clips μ into it, so no pixel's error can exceed that. Why: where the variance decoder
    is unsure of a star core brighter than it was trained on, it pins σ near ``logvar_max`` and the
    stretch turns that σ into a factor e^(σ/a) of brightness; the Gaussian's second moment through
    the stretch then exceeds, by orders of magnitude, any error a pixel of the file could have.

    Parameters
    ----------
    sigma : array
        The variance decoder's σ, normalized units.
    mu_phys : array
        The decoded μ, physical units, already clipped to [lo, hi].
    offset, scale, lo, hi : float, or array (B,)
        The plane's normalization and the tile's range: scalars for one tile, or one per tile of
        a batch (B, ...).
    """
    mu_phys = np.asarray(mu_phys, np.float64)

    def per_tile(v):
        v = np.asarray(v, np.float64)
        return _expand(v, mu_phys.ndim, np) if v.ndim else v

    mu = normalize(mu_phys, per_tile(offset), per_tile(scale), cfg)
    reach = np.maximum(per_tile(hi) - mu_phys, mu_phys - per_tile(lo))
    return np.minimum(sigma_to_physical(sigma, mu, scale, cfg), reach)


def sigma_to_physical_first_order(sigma, mu, scale, cfg) -> np.ndarray:
    """σ in physical units to first order through the stretch: σ·scale, times cosh(μ/a) for ``asinh``.

    The error-bounded codec's widths use it: they are part of its file format (a decoder must
    compute exactly what the encoder did), and they only need to be a good shape, which the
    per-tile context fit scales. ``none`` keeps σ. numpy in, float64 out.
    """
    sigma = np.asarray(sigma, np.float64)
    if cfg.normalization == "none":
        return sigma
    if cfg.normalization == "asinh":
        sigma = sigma * np.cosh(np.asarray(mu, np.float64) / cfg.asinh_softening)
    return _times_scale(sigma, scale)


def _times_scale(sigma: np.ndarray, scale) -> np.ndarray:
    scale = np.asarray(scale, np.float64)
    return sigma * (_expand(scale, sigma.ndim, np) if scale.ndim else scale)


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
    stretch is linear). ``none`` returns ``x`` as it is, like :func:`normalize`.
    """
    import tensorflow as tf

    if cfg.normalization == "none":
        return x if tf.is_tensor(x) else np.asarray(x)
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
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    offset, scale = np.asarray(offset, dtype), np.asarray(scale, dtype)
    if offset.ndim:
        offset = _expand(offset, x.ndim, np)
    if scale.ndim:
        scale = _expand(scale, x.ndim, np)
    if cfg.normalization == "asinh":
        a = np.dtype(dtype).type(cfg.asinh_softening)
        x = a * np.sinh(x / a)
    return x * scale + offset
