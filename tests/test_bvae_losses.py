"""The β-VAE loss pieces: β meets each sample's own KL, 10**logβ is 10**logβ, units are nats."""

import math

import numpy as np
import pytest
import tensorflow as tf

from fitsae.models.bvae_losses import (
    beta_objective,
    beta_weight,
    diag_gaussian_kl,
    gaussian_nll_sum,
    kl_per_sample,
)

RNG = np.random.default_rng(7)
B = 6
RECON = RNG.uniform(50, 100, B).astype(np.float32)
KL = RNG.uniform(1, 30, B).astype(np.float32)
LOGBETA = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0], np.float32)


def per_sample_formula(recon, kl, logbeta, beta_ref):
    recon, kl, logbeta = (np.asarray(v, np.float64) for v in (recon, kl, logbeta))
    return float(np.mean(recon + beta_ref * 10.0**logbeta * kl))


def test_beta_weight_is_ten_to_the_logbeta():
    w = beta_weight(tf.constant([-1.0, 0.0, 2.0]), beta_ref=0.5).numpy()
    np.testing.assert_allclose(w, [0.05, 0.5, 50.0], rtol=1e-6)
    seed_bug = 0.5 * np.exp([-1.0, 0.0, 2.0]) * math.log(10.0)
    assert not np.allclose(w, seed_bug, rtol=1e-2)


@pytest.mark.parametrize("beta_ref", [1.0, 0.3])
def test_objective_is_the_per_sample_formula(beta_ref):
    got = float(beta_objective(RECON, KL, LOGBETA, beta_ref))
    assert got == pytest.approx(per_sample_formula(RECON, KL, LOGBETA, beta_ref), rel=1e-6)
    seed_bug = float(np.mean(RECON) + beta_ref * np.mean(10.0**LOGBETA) * np.mean(KL))
    assert got != pytest.approx(seed_bug, rel=1e-3)


def test_permuting_logbeta_changes_the_loss_exactly_as_the_formula_says():
    before = float(beta_objective(RECON, KL, LOGBETA, 1.0))
    for perm in ([5, 4, 3, 2, 1, 0], [1, 0, 3, 2, 5, 4], [2, 3, 4, 5, 0, 1]):
        shuffled = LOGBETA[perm]
        after = float(beta_objective(RECON, KL, shuffled, 1.0))
        expected_change = float(np.mean((10.0 ** shuffled.astype(np.float64) - 10.0 ** LOGBETA) * KL))
        assert after - before == pytest.approx(expected_change, rel=1e-5, abs=1e-4)
        assert after == pytest.approx(per_sample_formula(RECON, KL, shuffled, 1.0), rel=1e-6)
        assert abs(expected_change) > 1.0  # the permutation really moves β onto other KLs


@pytest.mark.parametrize(
    "recon, kl, logbeta",
    [
        (RECON, KL, LOGBETA[:, None]),  # (B,) × (B, 1) would broadcast to (B, B): the seed's batch mean
        (RECON, KL[:, None], LOGBETA),
        (RECON[:, None], KL, LOGBETA),
        (RECON, KL, LOGBETA[:4]),
        (RECON, KL, np.float32(0.0)),  # one β for the whole batch is not per sample
    ],
)
def test_objective_rejects_anything_but_matching_vectors(recon, kl, logbeta):
    with pytest.raises(ValueError, match="beta_objective"):
        beta_objective(recon, kl, logbeta, 1.0)


def test_objective_checks_batch_size_inside_a_graph():
    fn = tf.function(
        lambda r, k, lb: beta_objective(r, k, lb, 1.0),
        input_signature=[tf.TensorSpec([None], tf.float32)] * 3,
    )
    assert float(fn(RECON, KL, LOGBETA)) == pytest.approx(per_sample_formula(RECON, KL, LOGBETA, 1.0), rel=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError):
        fn(RECON, KL, LOGBETA[:4])


def test_warmup_scales_only_the_kl_term():
    full = float(beta_objective(RECON, KL, LOGBETA, 1.0, warmup=1.0))
    half = float(beta_objective(RECON, KL, LOGBETA, 1.0, warmup=0.5))
    none = float(beta_objective(RECON, KL, LOGBETA, 1.0, warmup=0.0))
    assert none == pytest.approx(float(np.mean(RECON)), rel=1e-6)
    assert half == pytest.approx(0.5 * (full + none), rel=1e-6)


def test_gaussian_nll_sum_uses_each_images_noise():
    x = RNG.normal(size=(3, 4, 5, 1)).astype(np.float32)
    mean = RNG.normal(size=x.shape).astype(np.float32)
    noise = np.array([0.5, 1.0, 2.0], np.float32)
    got = gaussian_nll_sum(x, mean, noise).numpy()
    assert got.shape == (3,)
    s = noise.astype(np.float64)[:, None, None, None]
    want = (0.5 * ((x - mean) / s) ** 2 + np.log(s) + 0.5 * math.log(2 * math.pi)).reshape(3, -1).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gaussian_nll_of_a_perfect_reconstruction_is_the_entropy_constant():
    x = np.zeros((2, 8, 8, 1), np.float32)
    got = gaussian_nll_sum(x, x, np.ones(2, np.float32)).numpy()
    np.testing.assert_allclose(got, 64 * 0.5 * math.log(2 * math.pi), rtol=1e-6)


def test_gaussian_nll_refuses_a_batch_scalar_noise():
    with pytest.raises(ValueError, match=r"\(B,\)"):
        gaussian_nll_sum(np.zeros((2, 4, 4, 1), np.float32), np.zeros((2, 4, 4, 1), np.float32), np.ones((2, 1)))


def test_kl_closed_form_and_free_bits():
    mu = np.array([[0.0, 1.0, -2.0], [0.0, 0.0, 0.5]], np.float32)
    logvar = np.array([[0.0, -1.0, 0.5], [0.0, 0.0, 0.0]], np.float32)
    values = diag_gaussian_kl(mu, logvar).numpy()
    want = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)
    np.testing.assert_allclose(values, want, rtol=1e-6)
    assert values[1, 0] == 0.0  # the prior itself costs nothing
    np.testing.assert_allclose(kl_per_sample(values).numpy(), want.sum(1), rtol=1e-6)
    floored = kl_per_sample(values, free_bits=0.2).numpy()
    np.testing.assert_allclose(floored, np.maximum(want, 0.2).sum(1), rtol=1e-6)
