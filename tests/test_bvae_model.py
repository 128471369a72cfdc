"""The β-VAE model: protocol shapes, per-sample β pairing, in-graph randomness, gradients, save/load."""

import numpy as np
import pytest
import tensorflow as tf
from bvae_helpers import dense_config, toy_images

from fitsae import losses
from fitsae.models import build_model
from fitsae.models.bvae import BetaVAE
from fitsae.models.bvae_config import BVAEConfig
from fitsae.models.bvae_losses import beta_objective
from fitsae.models.config import ModelConfig


def conv_config(**bvae) -> ModelConfig:
    return ModelConfig(kind="bvae", latent_channels=3, filters=[4, 6], kernel_size=3,
                       bvae=BVAEConfig(architecture="conv", **bvae))


@pytest.fixture(scope="module")
def dense_model():
    tf.keras.utils.set_random_seed(1)
    return BetaVAE(dense_config(latent=4, hidden=(16,)), (8, 8, 1))


@pytest.fixture(scope="module")
def conv_model():
    tf.keras.utils.set_random_seed(2)
    return build_model(conv_config(), (16, 16, 1))


def check_protocol(model, x, latent_shape):
    b = x.shape[0]
    out = model.compute_losses(x, step=3, seed=11, rank=0)
    assert out["loss_primary"].shape == () and out["loss_variance"].shape == ()
    per_example = {k: v for k, v in out.items() if not k.startswith("loss_")}
    for key in ("mse", "nll", "recon", "kl", "rate", "logbeta", "active_units", "kl_dim_00"):
        assert key in per_example
    for key, value in per_example.items():
        assert value.shape == (b,), key
        assert value.dtype == tf.float32, key
    assert sorted(k for k in per_example if k.startswith("kl_dim_")) == [
        f"kl_dim_{c:02d}" for c in range(model.latent_channels)
    ]
    kl_dims = np.stack([per_example[f"kl_dim_{c:02d}"] for c in range(model.latent_channels)], 1)
    np.testing.assert_allclose(kl_dims.sum(1), out["kl"], rtol=1e-5)
    lb = tf.fill([b], 0.0)
    z = model.encode(x, lb)
    assert tuple(z.shape) == (b, *latent_shape)
    assert model.decode_mean(z, lb).shape == x.shape
    assert model.decode_var(z, lb).shape == x.shape
    mu, log_var = model(x, lb)
    np.testing.assert_allclose(mu, model.decode_mean(z, lb), rtol=1e-6, atol=1e-6)
    assert log_var.shape == x.shape


def test_dense_protocol_on_8x8(dense_model):
    assert dense_model.stride == 1 and dense_model.latent_shape(8, 8) == (4,)
    check_protocol(dense_model, tf.constant(toy_images(5, 8)), (4,))


def test_conv_protocol_on_16x16_and_any_divisible_size(conv_model):
    assert conv_model.stride == 4 and conv_model.latent_shape(16, 16) == (4, 4, 3)
    check_protocol(conv_model, tf.constant(toy_images(3, 16)), (4, 4, 3))
    # fully convolutional: a model built for 16×16 crops encodes larger tiles too
    check_protocol(conv_model, tf.zeros([2, 32, 24, 1]), (8, 6, 3))


def test_conv_works_at_256x256():
    model = BetaVAE(ModelConfig(kind="bvae", latent_channels=4, filters=[4, 4, 4, 4], kernel_size=3), (256, 256, 1))
    assert model.latent_shape(256, 256) == (16, 16, 4)
    out = model.compute_losses(tf.random.normal([2, 256, 256, 1]), step=0, seed=0, rank=0)
    assert np.isfinite(float(out["loss_primary"])) and out["rate"].shape == (2,)


def test_bad_geometry_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible by the total stride 4"):
        build_model(conv_config(), (18, 16, 1))
    with pytest.raises(ValueError, match="model.hidden"):
        BetaVAE(ModelConfig(kind="bvae", hidden=[], bvae=BVAEConfig(architecture="dense")), (8, 8, 1))
    with pytest.raises(ValueError, match="fixed image size"):
        BetaVAE(dense_config(), (None, None, 1))


def test_logbeta_is_drawn_per_sample_in_range_and_reproducibly(dense_model):
    x = tf.constant(toy_images(64, 8))
    a, b = dense_model.cfg.logbeta_range
    draw = tf.function(lambda step, rank: dense_model.compute_losses(x, step, 5, rank)["logbeta"])
    lb = draw(tf.constant(7), tf.constant(0)).numpy()
    assert lb.shape == (64,) and len(np.unique(lb)) == 64
    assert a <= lb.min() and lb.max() < b
    np.testing.assert_array_equal(lb, draw(tf.constant(7), tf.constant(0)).numpy())  # resume-exact
    assert not np.allclose(lb, draw(tf.constant(8), tf.constant(0)).numpy())  # new step, new β
    assert not np.allclose(lb, draw(tf.constant(7), tf.constant(1)).numpy())  # other rank, other β


def test_loss_primary_is_the_per_sample_formula(dense_model):
    x = tf.constant(toy_images(16, 8, seed=3))
    out = dense_model.compute_losses(x, step=2, seed=4, rank=0)
    recon, kl, lb = (out[k].numpy().astype(np.float64) for k in ("recon", "kl", "logbeta"))
    want = np.mean(recon + dense_model.cfg.beta_ref * 10.0**lb * kl)
    assert float(out["loss_primary"]) == pytest.approx(want, rel=1e-5)
    assert float(out["loss_primary"]) != pytest.approx(np.mean(recon) + np.mean(10.0**lb) * np.mean(kl), rel=1e-3)


def test_permuting_logbeta_in_a_batch_changes_the_loss_as_the_per_sample_formula_says(dense_model):
    """Each sample's loss depends only on its own (x_i, logβ_i, ε_i): evaluate one at a time and compare."""
    b = 8
    x = tf.constant(toy_images(b, 8, seed=4))
    eps = tf.random.stateless_normal([b, dense_model.latent_channels], seed=[3, 4])
    noise = tf.ones([b])
    logbeta = tf.constant(np.linspace(-2.0, 1.0, b), tf.float32)
    beta_ref = dense_model.cfg.beta_ref

    def batched(lb):
        t = dense_model.per_sample_terms(x, lb, eps, noise)
        assert t["recon"].shape == (b,) and t["kl"].shape == (b,) and lb.shape == (b,)
        return float(beta_objective(t["recon"], t["kl"], lb, beta_ref))

    def one_at_a_time(lb):
        total = 0.0
        for i in range(b):
            t = dense_model.per_sample_terms(x[i:i + 1], lb[i:i + 1], eps[i:i + 1], noise[i:i + 1])
            total += float(t["recon"][0]) + beta_ref * 10.0 ** float(lb[i]) * float(t["kl"][0])
        return total / b

    base = batched(logbeta)
    assert base == pytest.approx(one_at_a_time(logbeta), rel=1e-5)
    for perm in (np.arange(b)[::-1], np.roll(np.arange(b), 3)):
        shuffled = tf.gather(logbeta, perm)
        moved = batched(shuffled)
        assert moved == pytest.approx(one_at_a_time(shuffled), rel=1e-5)
        assert abs(moved - base) > 1e-3 * abs(base)  # the pairing of β with samples matters


def test_gradients_reach_only_their_own_optimizer(dense_model):
    x = tf.constant(toy_images(8, 8))
    with tf.GradientTape(persistent=True) as tape:
        out = dense_model.compute_losses(x, 0, 0, 0)
    enc = dense_model.encoder.trainable_variables
    mean_dec = dense_model.mean_decoder.trainable_variables
    var_dec = dense_model.var_decoder.trainable_variables
    assert all(g is None for g in tape.gradient(out["loss_variance"], enc + mean_dec))
    assert all(g is not None for g in tape.gradient(out["loss_variance"], var_dec))
    assert all(g is None for g in tape.gradient(out["loss_primary"], var_dec))
    assert all(g is not None for g in tape.gradient(out["loss_primary"], enc + mean_dec))
    assert {id(v) for v in dense_model.primary_variables} == {id(v) for v in enc + mean_dec}
    assert {id(v) for v in dense_model.variance_variables} == {id(v) for v in var_dec}


def test_variance_loss_is_the_nll_where_inference_uses_the_head(dense_model):
    """The σ head is trained on the posterior mean and its reconstruction (what ``encode`` stores
    and the codec decodes σ from), not on a posterior sample, whose larger error it would learn."""
    x = tf.constant(toy_images(8, 8))
    logbeta = tf.constant(np.linspace(-2.0, 1.0, 8), tf.float32)
    out = dense_model.compute_losses(x, 5, 0, 0, logbeta=logbeta)
    z = dense_model.encode(x, logbeta)
    expected = losses.gaussian_nll(x, dense_model.decode_mean(z, logbeta), dense_model.decode_var(z, logbeta))
    np.testing.assert_allclose(out["nll"].numpy(), expected.numpy(), rtol=1e-5)
    assert float(out["loss_variance"]) == pytest.approx(float(tf.reduce_mean(expected)), rel=1e-5)


def test_nll_to_encoder_lets_the_variance_loss_train_the_encoder():
    cfg = dense_config(latent=3, hidden=(8,))
    cfg.nll_to_encoder = True
    model = BetaVAE(cfg, (8, 8, 1))
    with tf.GradientTape() as tape:
        out = model.compute_losses(tf.constant(toy_images(4, 8)), 0, 0, 0)
    grads = tape.gradient(out["loss_variance"], model.encoder.trainable_variables)
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    assert len(model.variance_variables) == len(model.var_decoder.trainable_variables) + len(
        model.encoder.trainable_variables
    )


def test_kl_warmup_and_free_bits():
    x = tf.constant(toy_images(8, 8))
    lb = tf.zeros([8])
    plain = BetaVAE(dense_config(latent=4, hidden=(16,)), (8, 8, 1))
    warm = BetaVAE(dense_config(latent=4, hidden=(16,), kl_warmup_steps=10, free_bits=0.5), (8, 8, 1))
    warm.set_weights(plain.get_weights())
    assert float(warm.kl_warmup(0)) == pytest.approx(0.1) and float(warm.kl_warmup(9)) == 1.0
    assert float(warm.kl_warmup(10**6)) == 1.0 and float(plain.kl_warmup(0)) == 1.0
    p = plain.compute_losses(x, 9, 0, 0, logbeta=lb)
    w = warm.compute_losses(x, 9, 0, 0, logbeta=lb)
    np.testing.assert_allclose(p["kl"], w["kl"], rtol=1e-6)  # the reported KL is the true one
    # free bits: every latent value costs at least 0.5 nats in the objective
    per_value = warm.per_sample_terms(x, lb, tf.random.stateless_normal([8, 4], seed=[0, 0]), tf.ones([8]))
    floored = np.maximum(per_value["kl_values"].numpy(), 0.5).sum(1)
    np.testing.assert_allclose(per_value["kl_penalised"], floored, rtol=1e-5)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, conv_model):
    x = tf.constant(toy_images(2, 16))
    lb = tf.constant([-1.0, 0.5])
    prefix = tf.train.Checkpoint(model=conv_model).write(str(tmp_path / "ckpt"))
    fresh = build_model(conv_config(), (16, 16, 1))
    assert not np.allclose(fresh.encode(x, lb), conv_model.encode(x, lb))
    tf.train.Checkpoint(model=fresh).read(prefix).assert_existing_objects_matched()
    z = conv_model.encode(x, lb)
    np.testing.assert_array_equal(fresh.encode(x, lb), z)
    np.testing.assert_array_equal(fresh.decode_mean(z, lb), conv_model.decode_mean(z, lb))
    np.testing.assert_array_equal(fresh.decode_var(z, lb), conv_model.decode_var(z, lb))


def test_saved_model_export_needs_only_tensorflow(tmp_path, conv_model):
    module = conv_model.inference_module("model: {kind: bvae}\n")
    tf.saved_model.save(module, str(tmp_path / "export"), signatures=module.signatures())
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    x = tf.constant(toy_images(2, 32))  # conv export takes any size divisible by the stride
    lb = tf.constant([-2.0, 1.0])
    z = loaded.encode(x, lb)
    np.testing.assert_allclose(z, conv_model.encode(x, lb), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.decode_mean(z, lb), conv_model.decode_mean(z, lb), rtol=1e-5, atol=1e-6)
    assert int(loaded.stride) == 4 and list(loaded.logbeta_range.numpy()) == [-3.0, 1.0]
