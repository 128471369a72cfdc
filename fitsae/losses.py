"""Per-example losses of the dual-decoder autoencoders.

Everything returns one value per example (shape (B,)) so the training loop can average exactly
over ranks, bucket metrics by η, and evaluation can report them per image. Pixel means (not
sums) keep learning rates independent of the image size.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["mse", "weighted_mse", "window_flux_error", "gaussian_nll", "soft_clamp"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _pixel_axes(x: tf.Tensor) -> list[int]:
    return list(range(1, len(x.shape)))


def mse(x: tf.Tensor, mu: tf.Tensor) -> tf.Tensor:
    """Mean squared error over the pixels of each example, shape (B,)."""
    return tf.reduce_mean(tf.square(x - mu), axis=_pixel_axes(x))


def weighted_mse(x: tf.Tensor, mu: tf.Tensor, softening: float) -> tf.Tensor:
    """MSE with pixel weights cosh(x/softening), normalized by their mean per example, shape (B,).

    A flat, faint example weighs as in :func:`mse`; its bright pixels weigh ≈ |x|/softening
    more (``ModelConfig.distortion_weight_softening`` says why).
    """
    axes = _pixel_axes(x)
    w = tf.cosh(tf.clip_by_value(tf.stop_gradient(x) / softening, -30.0, 30.0))
    return tf.reduce_sum(w * tf.square(x - mu), axis=axes) / tf.reduce_sum(w, axis=axes)


def window_flux_error(x: tf.Tensor, mu: tf.Tensor, window: int, softening: float | None) -> tf.Tensor:
    """Squared flux error of k×k windows over the flux variance the stretch assumes, per example (B,).

    ``x``, ``mu`` are model-space images: noise units, stretched by a·asinh(·/a) when
    ``softening`` a is given (the data's ``asinh_softening``), linear when it is None. Both are
    taken back to linear noise units; windows of side ``window`` step by half a window. Each
    window's error (ΣΔ)² is divided by Σ(1 + (x/a)²), the variance of its sum when every pixel has
    the variance the stretch is built on (k² without a stretch), so a window of pure noise scores
    ≈ 1, as one pixel does in :func:`mse`. Why: the pixel MSE lets errors each within its pixel's
    noise add up coherently over an aperture (a flux bias); the window sums do not.
    """
    if softening is not None:
        # sinh(20) ≈ 2.4e8: far above any stretched datum, and finite when squared in float32.
        linear = lambda t: softening * tf.sinh(tf.clip_by_value(t / softening, -20.0, 20.0))  # noqa: E731
        x, mu = linear(x), linear(mu)
    x = tf.stop_gradient(x)
    area = float(window * window)
    pool = lambda t: tf.nn.avg_pool2d(t, window, max(1, window // 2), "VALID") * area  # noqa: E731
    variance = area if softening is None else pool(1.0 + tf.square(x / softening))
    error = tf.square(pool(mu - x)) / variance
    return tf.reduce_mean(error, axis=_pixel_axes(error))


def gaussian_nll(x: tf.Tensor, mu: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
    """Gaussian negative log-likelihood per pixel, averaged over the pixels of each example.

    ½(log 2π + s + (x−μ)² e^(−s)) with s = log σ². With the constant included the value is a
    proper NLL in nats per pixel, comparable between runs and against the noise level (a perfect
    μ with σ = noise σ = 1 scores ½(log 2π + 1) ≈ 1.419).
    """
    nll = _HALF_LOG_2PI + 0.5 * (logvar + tf.square(x - mu) * tf.exp(-logvar))
    return tf.reduce_mean(nll, axis=_pixel_axes(x))


def soft_clamp(raw: tf.Tensor, low: float, high: float) -> tf.Tensor:
    """Identity well inside [low, high], smoothly saturating at the bounds.

    Used for the log-variance head: a hard clip would cut the gradient of every pixel outside the
    range, so an untrained head could stay stuck there; softplus keeps a gradient everywhere.
    The final clip only trims the ~log(1 + e^(low-high)) the two softplus overshoot the lower
    bound by, where the gradient is already negligible.
    """
    above_low = low + tf.nn.softplus(raw - low)
    return tf.clip_by_value(high - tf.nn.softplus(high - above_low), low, high)
