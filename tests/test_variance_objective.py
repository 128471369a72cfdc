"""The variance decoder's objective: the NLL's gradient reaches it, and trained σ follows the true noise."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from fitsae import losses
from fitsae.models import build_model
from fitsae.models.config import ModelConfig
from fitsae.train.checkpoints import load_model
from fitsae.train.loop import train
from fitsae.train.memory import ArrayData
from train_helpers import tiny_config

SIZE = 8


def test_nll_gradient_with_respect_to_log_variance_is_half_one_minus_z_squared():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 4, 4, 1)), tf.float32)
    mu = tf.constant(rng.normal(size=(3, 4, 4, 1)), tf.float32)
    s = tf.Variable(rng.normal(size=(3, 4, 4, 1)), dtype=tf.float32)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(losses.gaussian_nll(x, mu, s))
    r2 = (x.numpy() - mu.numpy()) ** 2
    expected = 0.5 * (1.0 - r2 * np.exp(-s.numpy())) / 16  # d/ds of the per-example pixel mean
    np.testing.assert_allclose(tape.gradient(total, s).numpy(), expected, rtol=1e-5, atol=1e-7)
    # The minimum over s is at the squared residual: σ² = (x − μ)², not its inverse.
    at_residual = losses.gaussian_nll(x, mu, tf.math.log(tf.constant(r2, tf.float32)))
    np.testing.assert_allclose(at_residual.numpy(), np.mean(0.5 * (np.log(2 * np.pi) + np.log(r2) + 1), axis=(1, 2, 3)),
                               rtol=1e-5)


def test_every_variance_decoder_weight_gets_a_nonzero_gradient_from_the_variance_loss():
    model = build_model(ModelConfig(kind="dense", latent_channels=2, hidden=[8]), (SIZE, SIZE, 1))
    x = tf.random.stateless_normal([16, SIZE, SIZE, 1], seed=[3, 4])
    with tf.GradientTape() as tape:
        out = model.compute_losses(x, 0, 0, 0)
    grads = tape.gradient(out["loss_variance"], model.var_decoder.trainable_variables)
    assert len(grads) == len(model.var_decoder.trainable_variables) > 0
    for var, grad in zip(model.var_decoder.trainable_variables, grads, strict=True):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, var.path


def heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``a·T + ε`` with one smooth template T (a ~ N(0, 1)) and noise σ rising from 0.5 to 2
    across the image; returns the images and the true σ map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1)
    sigma = 0.5 * 4.0 ** ((yy + xx) / 2)
    template = np.exp(-((yy - 0.4) ** 2 + (xx - 0.6) ** 2) / 0.1)
    template /= np.linalg.norm(template)
    images = rng.normal(0, 1, (n, 1, 1)) * template * SIZE + sigma * rng.normal(size=(n, SIZE, SIZE))
    return images.astype(np.float32), sigma


def test_trained_sigma_tracks_a_known_heteroscedastic_noise_map(tmp_path):
    """One latent unit captures the template; what is left is the noise, whose σ the head must learn."""
    images, sigma = heteroscedastic(4096, seed=0)
    cfg = tiny_config(
        data={"tile": SIZE, "batch_size": 64},
        model={"kind": "dense", "latent_channels": 1, "hidden": [], "activation": "linear"},
        optimizer={"learning_rate": 0.01},
        train={"steps": 600, "log_every": 100, "image_every": 0, "checkpoint_every": 600, "export": False},
    )
    assert train(cfg, tmp_path / "run", data=ArrayData(images, 64)).exit_code == 0
    _, model, _ = load_model(tmp_path / "run")
    test, _ = heteroscedastic(2048, seed=1)
    x = tf.constant(test[..., None])
    z = model.encode(x, tf.ones([len(test)], tf.int32))
    mu, log_var = model.decode_mean(z).numpy()[..., 0], model.decode_var(z).numpy()[..., 0]
    predicted = np.exp(0.5 * log_var)
    correlation = np.corrcoef(predicted.mean(axis=0).ravel(), sigma.ravel())[0, 1]
    z_std = float(np.std((test - mu) / predicted))
    print(f"corr(σ̂, σ) = {correlation:.4f}, std((x − μ)/σ̂) = {z_std:.4f}")
    assert correlation > 0.95
    assert 0.9 < z_std < 1.1
