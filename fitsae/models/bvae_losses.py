"""Loss pieces of the β-VAE, each per sample so that β can meet its own sample's KL.

Contract: every function returns one value per sample (shape ``(B,)``), and
:func:`beta_objective` checks statically and at run time that recon, KL and log β are all
exactly ``(B,)``: a ``(B, 1)`` log β against a ``(B,)`` KL would silently broadcast to
``(B, B)`` and average β over the batch. β is ``10**logβ``.

Why: the seed notebook's β-VAE multiplied batch-mean β by batch-mean KL, and wrote 10**logβ
as ``exp(logβ)·ln 10``, so β carried no signal (docs/history.md, "The β-VAE").
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = [
    "gaussian_nll_sum",
    "diag_gaussian_kl",
    "kl_per_sample",
    "beta_weight",
    "beta_objective",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _per_sample_sum(t: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1)


def _per_sample_scale(v: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reshape a ``(B,)`` vector to broadcast against ``like`` one sample at a time."""
    v = tf.convert_to_tensor(v, like.dtype)
    if v.shape.rank != 1:
        raise ValueError(f"expected a per-sample vector of shape (B,), got shape {v.shape}")
    return tf.reshape(v, [-1] + [1] * (like.shape.rank - 1))


def gaussian_nll_sum(x: tf.Tensor, mean: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
    """Gaussian negative log-likelihood of ``x`` under N(mean, noise²), summed over pixels, in nats.

    Summing (not averaging) over pixels and using the data's own noise σ gives the reconstruction
    term a physical scale: with β = 1 the objective is the negative ELBO, so log β says how many
    nats of distortion one nat of rate is worth, independent of the image size.

    Parameters
    ----------
    x, mean
        ``(B, ...)`` images in normalized units.
    noise
        ``(B,)`` noise σ per image in the same units.

    Returns
    -------
    ``(B,)`` float32.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    mean = tf.convert_to_tensor(mean, tf.float32)
    sigma = _per_sample_scale(noise, x)
    z = (x - mean) / sigma
    return _per_sample_sum(0.5 * tf.square(z) + tf.math.log(sigma) + 0.5 * _LOG_2PI)


def diag_gaussian_kl(mu: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
    """KL(N(mu, e^logvar) ‖ N(0, 1)) per latent value, in nats, same shape as ``mu``."""
    mu = tf.convert_to_tensor(mu, tf.float32)
    logvar = tf.convert_to_tensor(logvar, tf.float32)
    return 0.5 * (tf.square(mu) + tf.exp(logvar) - 1.0 - logvar)


def kl_per_sample(kl_values: tf.Tensor, free_bits: float = 0.0) -> tf.Tensor:
    """Sum the KL of each sample over its latent values, optionally with free bits.

    Free bits (nats per latent value) are applied per sample and per value, ``max(KL_ij, λ)``, rather
    than on batch means as in Kingma et al. (2016): a batch mixes samples with different β, and a
    batch-level floor would couple them again.
    """
    if free_bits > 0:
        kl_values = tf.maximum(kl_values, tf.cast(free_bits, kl_values.dtype))
    return _per_sample_sum(kl_values)


def beta_weight(logbeta: tf.Tensor, beta_ref: float, warmup: tf.Tensor | float = 1.0) -> tf.Tensor:
    """The KL weight of each sample, β_r · 10**logβ_i · warmup, shape ``(B,)``.

    ``10**logβ`` is computed as ``exp(logβ · ln 10)``; the seed wrote ``exp(logβ) · ln 10``.
    """
    logbeta = tf.convert_to_tensor(logbeta, tf.float32)
    return tf.cast(beta_ref, tf.float32) * tf.exp(logbeta * math.log(10.0)) * tf.cast(warmup, tf.float32)


def beta_objective(
    recon: tf.Tensor, kl: tf.Tensor, logbeta: tf.Tensor, beta_ref: float, warmup: tf.Tensor | float = 1.0
) -> tf.Tensor:
    """mean_i[recon_i + β_r · 10**logβ_i · KL_i], with all three inputs exactly ``(B,)``.

    Raises
    ------
    ValueError
        If any input is not a rank-1 tensor or their static lengths differ. Ranks are checked here
        (not left to broadcasting) because ``(B, 1) * (B,)`` is a valid ``(B, B)`` product whose mean
        is ``mean(β) · mean(KL)`` -- the seed's bug.
    """
    recon = tf.convert_to_tensor(recon, tf.float32)
    kl = tf.convert_to_tensor(kl, tf.float32)
    logbeta = tf.convert_to_tensor(logbeta, tf.float32)
    for name, t in (("recon", recon), ("kl", kl), ("logbeta", logbeta)):
        if t.shape.rank != 1:
            raise ValueError(f"beta_objective: {name} must have shape (B,), got {t.shape}")
    if not (recon.shape.is_compatible_with(kl.shape) and kl.shape.is_compatible_with(logbeta.shape)):
        raise ValueError(
            f"beta_objective: recon {recon.shape}, kl {kl.shape} and logbeta {logbeta.shape} must be the same (B,)"
        )
    tf.debugging.assert_equal(tf.shape(recon), tf.shape(kl), message="recon and kl differ in batch size")
    tf.debugging.assert_equal(tf.shape(kl), tf.shape(logbeta), message="kl and logbeta differ in batch size")
    per_sample = recon + beta_weight(logbeta, beta_ref, warmup) * kl
    return tf.reduce_mean(per_sample)
