"""Per-example losses of the dual-decoder autoencoders.

Everything returns one value per example (shape (B,)) so the training loop can average exactly
over ranks, bucket metrics by η, and evaluation can report them per image. Pixel means (not
sums) keep learning rates independent of the image size.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["mse", "gaussian_nll", "soft_clamp"]

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
