"""The learned prior and the rate term of λ·D + R: a distribution, counted on kept channels only,
frozen into tables that cost what the prior predicts, and trading bits for error with λ."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from fitsae.entropy import encode_latents, tables_from_prior
from fitsae.models import build_model
from fitsae.models.prior import FactorizedPrior
from fitsae.train.loop import train
from fitsae.train.memory import ArrayData
from train_helpers import blobs, tiny_config


def test_prior_probabilities_over_the_integers_sum_to_one():
    prior = FactorizedPrior(3)
    ks = np.arange(-400, 401, dtype=np.float32)
    p = prior.likelihood(tf.constant(np.tile(ks[:, None], (1, 3)))).numpy()
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)


def test_frozen_tables_cost_what_the_prior_predicts():
    """Freezing (fixed-point frequencies plus an escape) must not change the rate the model trained on."""
    prior = FactorizedPrior(2, init_scale=4.0)
    k = np.rint(np.random.default_rng(0).normal(size=(4000, 2)) * np.array([3.0, 1.0])).astype(np.int64)
    predicted = float(tf.reduce_sum(prior.bits(tf.constant(k, tf.float32))))
    tables = tables_from_prior(prior)
    assert tables.ideal_bits(k) == pytest.approx(predicted, rel=2e-3)
    data, escapes = encode_latents(tables, k)
    assert escapes == 0
    assert 8 * len(data) == pytest.approx(predicted, rel=0.01)


def _rate_model(rate_lambda=1.0):
    cfg = tiny_config(model={"rate_lambda": rate_lambda})
    return build_model(cfg.model, (None, None, 1))


def test_rate_counts_only_the_kept_channels():
    model = _rate_model()
    x = tf.constant(blobs(2, 16, seed=3)[..., None])
    out = model.compute_losses(x, 0, 0, 0, training=False, eta=tf.constant([1, 1], tf.int32))
    z = tf.round(model.encoder(x))
    expected = tf.reduce_sum(model.prior.bits(z)[..., 0], axis=[1, 2]) / (16 * 16)
    np.testing.assert_allclose(out["bpp"].numpy(), expected.numpy(), rtol=1e-6)
    every = model.compute_losses(x, 0, 0, 0, training=False, eta=tf.constant([4, 4], tf.int32))
    assert np.all(every["bpp"].numpy() > out["bpp"].numpy())


def test_a_model_without_rate_has_no_prior_and_trains_on_the_mse_alone():
    cfg = tiny_config()
    model = build_model(cfg.model, (None, None, 1))
    assert model.prior is None
    x = tf.constant(blobs(2, 16, seed=3)[..., None])
    out = model.compute_losses(x, 0, 0, 0, training=True)
    assert "bpp" not in out
    assert float(out["loss_primary"]) == pytest.approx(float(tf.reduce_mean(out["mse"])))


def _trained(tmp_path, rate_lambda: float, name: str):
    cfg = tiny_config(model={"rate_lambda": rate_lambda}, train={"steps": 150, "image_every": 0, "log_every": 150,
                                                                 "checkpoint_every": 150, "export": False})
    images = blobs(64, 16, seed=1)
    result = train(cfg, tmp_path / name, data=ArrayData(images, 8, seed=0))
    return result.metrics


def test_a_larger_lambda_buys_lower_error_with_more_bits(tmp_path):
    frugal = _trained(tmp_path, 0.05, "frugal")
    generous = _trained(tmp_path, 20.0, "generous")
    assert generous["rate/bpp"] > frugal["rate/bpp"]
    assert generous["mse"] < frugal["mse"]


def test_the_export_of_a_rate_model_carries_its_frozen_tables(tmp_path):
    from astropy.io import fits

    from fitsae.entropy import tables_from_hdu
    from fitsae.train.export import export_model

    model = _rate_model()
    export_model(model, tmp_path / "export")
    with fits.open(tmp_path / "export" / "tables.fits", checksum=True) as hdul:
        assert tables_from_hdu(hdul["TABLES"]).digest() == tables_from_prior(model.prior).digest()


def test_a_checkpoint_restores_the_prior_it_was_trained_with(tmp_path):
    """The codec's tables come from the restored prior: a checkpoint that left it out would code
    every file with the untrained density (5× the bits the training reported)."""
    from fitsae.train.checkpoints import restore_weights

    trained = _rate_model()
    rng = np.random.default_rng(0)
    for v in trained.prior.weights:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    prefix = tf.train.Checkpoint(model=trained).write(str(tmp_path / "ckpt"))
    restored = _rate_model()
    assert restore_weights(restored, prefix)
    for a, b in zip(trained.prior.weights, restored.prior.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(restored.prior.weights) > 0
