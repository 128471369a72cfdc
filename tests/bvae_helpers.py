"""Shared pieces of the β-VAE tests: tiny toy images and a minimal two-optimizer training loop.

The loop drives the model only through the protocol the generic fitsae loop uses
(``compute_losses`` → ``loss_primary`` with ``primary_variables``, ``loss_variance`` with
``variance_variables``), so a model that trains here trains there.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fitsae.models.bvae import BetaVAE
from fitsae.models.bvae_config import BVAEConfig
from fitsae.models.config import ModelConfig


def toy_images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    """Gaussian blobs on unit white noise, float32 ``(n, size, size, 1)`` (noise σ = 1).

    One to three round blobs of width 1–2.5 px and peak 2–12 σ at random sub-pixel positions: the
    notebooks' toy fields, shrunk so a small model learns them in seconds.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = rng.standard_normal((n, size, size)).astype(np.float32)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(1, size - 2, size=2)
            width = rng.uniform(1.0, 2.5)
            peak = rng.uniform(2.0, 12.0)
            images[i] += peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return images[..., None]


def dense_config(latent: int = 8, hidden=(64, 64), logbeta_range=(-2.0, 1.0), **bvae) -> ModelConfig:
    return ModelConfig(
        kind="bvae",
        latent_channels=latent,
        hidden=list(hidden),
        bvae=BVAEConfig(architecture="dense", logbeta_range=logbeta_range, **bvae),
    )


def train(model: BetaVAE, images: np.ndarray, steps: int, batch: int = 64, lr: float = 2e-3, seed: int = 0):
    """Train with two Adam optimizers exactly as the generic loop does; returns the last losses."""
    opt1 = tf.keras.optimizers.Adam(lr)
    opt2 = tf.keras.optimizers.Adam(lr)
    data = tf.constant(images)
    n = images.shape[0]

    @tf.function
    def step_fn(step):
        idx = tf.random.stateless_uniform([batch], seed=[seed, step], maxval=n, dtype=tf.int32)
        x = tf.gather(data, idx)
        with tf.GradientTape(persistent=True) as tape:
            out = model.compute_losses(x, step, seed, 0, training=True)
        opt1.apply_gradients(zip(tape.gradient(out["loss_primary"], model.primary_variables), model.primary_variables))
        opt2.apply_gradients(
            zip(tape.gradient(out["loss_variance"], model.variance_variables), model.variance_variables)
        )
        return out["loss_primary"], out["loss_variance"]

    losses = None
    for step in range(steps):
        losses = step_fn(tf.constant(step, tf.int32))
    return [float(v) for v in losses]
