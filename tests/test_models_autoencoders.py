"""Dense and fully-convolutional tunable autoencoders: shapes, heads, the two gradient paths."""

import numpy as np
import pytest
import tensorflow as tf

from fitsae.models import build_model
from fitsae.models.config import ModelConfig


def conv_cfg(**kw):
    return ModelConfig(kind="conv", latent_channels=4, filters=[4, 8], **kw)


def test_conv_model_takes_any_size_divisible_by_stride():
    model = build_model(conv_cfg(strides=[2, 4]), (None, None, 1))
    assert model.stride == 8 and model.latent_channels == 4
    for h, w in [(16, 24), (64, 8)]:
        x = tf.zeros([2, h, w, 1])
        z = model.encode(x, tf.constant([1, 4]))
        assert tuple(z.shape) == (2, *model.latent_shape(h, w))
        assert model.decode_mean(z).shape == x.shape and model.decode_var(z).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        build_model(conv_cfg(), (30, 32, 1))


def test_dense_model_shapes_and_fixed_size():
    model = build_model(ModelConfig(kind="dense", latent_channels=5, hidden=[16]), (8, 8, 1))
    z = model.encode(tf.zeros([3, 8, 8, 1]), tf.constant([5, 2, 1]))
    assert z.shape == (3, 5) and model.stride == 1
    np.testing.assert_array_equal(z.numpy()[2, 1:], 0)
    with pytest.raises(ValueError, match="fixed image size"):
        build_model(ModelConfig(kind="dense"), (None, None, 1))


def test_heads_are_linear_mean_and_clamped_log_variance():
    cfg = conv_cfg(logvar_min=-3.0, logvar_max=2.0)
    model = build_model(cfg, (None, None, 1))
    z = 50.0 * tf.random.stateless_normal([4, 4, 4, 4], seed=[0, 1])
    mu, logvar = model.decode_mean(z).numpy(), model.decode_var(z).numpy()
    # A linear head reaches negative values (the notebooks' ReLU head could not).
    assert mu.min() < 0 < mu.max()
    assert logvar.min() >= -3.0 and logvar.max() <= 2.0
    assert logvar.min() < -2.5 and logvar.max() > 1.5


@pytest.mark.parametrize("nll_to_encoder", [False, True])
def test_nll_reaches_only_the_variance_decoder_unless_allowed(nll_to_encoder):
    model = build_model(conv_cfg(nll_to_encoder=nll_to_encoder), (None, None, 1))
    x = tf.random.stateless_normal([2, 8, 8, 1], seed=[1, 1])
    with tf.GradientTape(persistent=True) as tape:
        out = model.compute_losses(x, 0, 0, 0)
    encoder_grads = tape.gradient(out["loss_variance"], model.encoder.trainable_variables)
    mean_grads = tape.gradient(out["loss_variance"], model.mean_decoder.trainable_variables)
    var_grads = tape.gradient(out["loss_primary"], model.var_decoder.trainable_variables)
    assert all(g is None for g in mean_grads)
    assert all(g is None for g in var_grads)
    assert all((g is not None) == nll_to_encoder for g in encoder_grads)
    encoder_ids = {id(v) for v in model.encoder.trainable_variables}
    assert bool(encoder_ids & {id(v) for v in model.variance_variables}) == nll_to_encoder
    assert not {id(v) for v in model.var_decoder.trainable_variables} & {id(v) for v in model.primary_variables}


def test_compute_losses_returns_the_protocol():
    model = build_model(conv_cfg(eta_per="example"), (None, None, 1))
    out = model.compute_losses(tf.zeros([5, 8, 8, 1]), 3, 0, 1)
    assert out["loss_primary"].shape == () and out["loss_variance"].shape == ()
    for key in ("mse", "nll", "eta"):
        assert out[key].shape == (5,) and out[key].dtype == tf.float32
    np.testing.assert_allclose(out["loss_primary"].numpy(), out["mse"].numpy().mean(), rtol=1e-6)
    fixed = model.compute_losses(tf.zeros([2, 8, 8, 1]), 0, 0, 0, eta=tf.constant([2, 2]))
    np.testing.assert_array_equal(fixed["eta"].numpy(), [2, 2])


def test_the_weighted_distortion_weighs_each_pixel_by_cosh_of_its_target():
    """With distortion_weight_softening s the primary loss is Σ w (x − μ)² / Σ w, w = cosh(x/s), per
    example: a bright pixel's error counts ≈ x/s times a faint one's."""
    model = build_model(conv_cfg(distortion_weight_softening=10.0), (None, None, 1))
    x = np.zeros([2, 8, 8, 1], np.float32)
    x[0, 3, 4, 0] = 40.0
    eta = tf.constant([4, 4])
    mu = model.decode_mean(model.encode(tf.constant(x), eta)).numpy().astype(np.float64)
    out = model.compute_losses(tf.constant(x), 0, 0, 1, eta=eta)
    w = np.cosh(x.astype(np.float64) / 10.0)
    expected = (w * (x - mu) ** 2).sum(axis=(1, 2, 3)) / w.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(out["loss_primary"].numpy(), expected.mean(), rtol=1e-5)
    assert not np.isclose(out["loss_primary"].numpy(), out["mse"].numpy().mean(), rtol=1e-3)


@pytest.mark.parametrize("softening", [10.0, None])
def test_the_flux_term_adds_each_windows_squared_flux_error_over_its_variance(softening):
    """With flux_weight w the primary loss is MSE + w·mean over 8×8 windows (every 4 pixels) of
    (Σ μ_lin − Σ x_lin)² / Σ(1 + (x_lin/a)²), sums in linear units x_lin = a·sinh(x/a) (for linear
    data x_lin = x and the variance is k²)."""
    model = build_model(conv_cfg(flux_weight=2.0), (None, None, 1))
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, [2, 16, 16, 1]).astype(np.float32)
    x[0, 5, 6, 0] = 35.0
    eta = tf.constant([4, 4])
    mu = model.decode_mean(model.encode(tf.constant(x), eta)).numpy().astype(np.float64)
    out = model.compute_losses(tf.constant(x), 0, 0, 1, eta=eta, softening=softening)
    linear = (lambda t: t) if softening is None else (lambda t: softening * np.sinh(t / softening))
    x_lin, mu_lin = linear(x.astype(np.float64)), linear(mu)
    flux = np.zeros(2)
    for i in range(2):
        terms = []
        for y0 in range(0, 9, 4):
            for x0 in range(0, 9, 4):
                window = np.s_[i, y0:y0 + 8, x0:x0 + 8, 0]
                variance = 64.0 if softening is None else np.sum(1.0 + (x_lin[window] / softening) ** 2)
                terms.append(np.sum(mu_lin[window] - x_lin[window]) ** 2 / variance)
        flux[i] = np.mean(terms)
    mse = ((x - mu) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(out["flux"].numpy(), flux, rtol=1e-4)
    np.testing.assert_allclose(out["loss_primary"].numpy(), (mse + 2.0 * flux).mean(), rtol=1e-4)
