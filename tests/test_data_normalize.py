"""Robust statistics, their fallbacks, and the exact inverse of the normalization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from fitsae.data.config import DataConfig
from fitsae.data.normalize import (decoded_sigma, denormalize, image_parameters, normalize, robust_stats,
                                   sigma_to_physical, sigma_to_physical_first_order)
from data_helpers import gaussian_field


def test_noise_and_background_are_recovered_despite_sources():
    rng = np.random.default_rng(0)
    data = gaussian_field(rng, (128, 128), background=300.0, sigma=7.0).astype(np.float64)
    data += np.linspace(0, 50, 128)[None, :]  # a sky gradient does not inflate the noise
    stats = robust_stats(data)
    assert stats.noise_source == "diff5"
    assert abs(stats.noise / 7.0 - 1) < 0.05
    assert abs(stats.median - 325.0) < 3.0


def _noise_field(sigma: float, seed: int) -> np.ndarray:
    """256² pure noise on a sloping sky (gradient 0.05 counts per pixel) with two bright stars."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    sky = 1000.3 + 0.05 * (yy + xx)
    stars = sum(4000.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0) for cy, cx in ((60, 70), (190, 140)))
    return sky + stars + rng.normal(0.0, sigma, (256, 256))


@pytest.mark.parametrize("sigma", [0.7, 1.5, 2.8, 10.0])
def test_noise_of_integer_data_is_unbiased(sigma):
    """Counts rounded to integers: the quantization neither floors nor inflates the estimate.

    The former estimate (MAD of neighbour differences) gave 1.05 for σ = 1.5 and 3.15 for 2.8.
    """
    ratios = []
    for seed in range(3):
        counts = np.rint(_noise_field(sigma, seed)).astype(np.int32)
        stats = robust_stats(counts, quantum=1.0)
        assert stats.noise_source == "diff5"
        ratios.append(stats.noise / sigma)
    print(f"σ = {sigma}: estimate / truth = {np.round(ratios, 4).tolist()}")
    assert all(abs(r - 1) < 0.04 for r in ratios), ratios


@pytest.mark.parametrize("sigma", [0.7, 1.5, 2.8, 10.0])
def test_noise_of_float_data(sigma):
    ratios = [robust_stats(_noise_field(sigma, seed)).noise / sigma for seed in range(3)]
    assert all(abs(r - 1) < 0.04 for r in ratios), ratios


def test_integer_data_scaled_by_bscale_use_its_step():
    """Integers × BSCALE 0.25 (quantum 0.25 physical units) with σ = 0.4 physical, i.e. 1.6 steps."""
    raw = np.rint(_noise_field(1.6, 7)).astype(np.int32)
    stats = robust_stats(0.25 * raw + 3.0, quantum=0.25)
    assert abs(stats.noise / 0.4 - 1) < 0.04
    # Floats holding whole numbers are integer data too.
    assert abs(robust_stats(raw.astype(np.float32)).noise / 1.6 - 1) < 0.04


def test_explicit_noise_then_header_come_before_the_estimate():
    counts = np.rint(_noise_field(1.5, 1)).astype(np.int32)
    def chosen(**kw):
        stats = robust_stats(counts, quantum=1.0, **kw)
        return stats.noise, stats.noise_source

    assert chosen(header_noise=0.29) == (0.29, "header")
    assert chosen(header_noise=0.29, noise=2.0) == (2.0, "config")
    for unusable in (0.0, -1.0, math.nan, math.inf, None):  # such header values are ignored
        assert chosen(header_noise=unusable)[1] == "diff5"


def test_fallbacks_for_degenerate_noise():
    flat_int = np.full((8, 8), 5, np.int16)
    assert robust_stats(flat_int, header_noise=0.25).noise_source == "header"
    stats = robust_stats(flat_int, quantum=2.0)
    assert stats.noise_source == "quantization" and stats.noise == pytest.approx(2.0 / math.sqrt(12))
    # Rows alternating 0, 9 have no 5th-order differences (every other pixel is equal); a few
    # noisy rows give some, but not enough to move the median off 0: their spread is used.
    rows = np.tile(np.array([0.5, 9.5]), (16, 8))
    rows[:3] += np.random.default_rng(3).normal(0, 1, (3, 16))
    assert robust_stats(rows).noise_source == "std"
    assert robust_stats(np.full((4, 4), 3.5)).noise_source == "unit"
    with pytest.raises(ValueError, match="all 16 pixels"):
        robust_stats(np.full((4, 4), np.nan))


def test_masked_pixels_are_ignored_and_counted():
    data = np.random.default_rng(1).normal(10, 2, (64, 64))
    data[::7, ::5] = np.nan
    stats = robust_stats(data)
    assert stats.n_masked == int(np.isnan(data).sum()) and stats.n_pixels == 64 * 64
    assert abs(stats.noise / 2 - 1) < 0.1


@pytest.mark.parametrize("normalization", ["robust", "asinh", "none"])
def test_denormalize_inverts_normalize(normalization):
    cfg = DataConfig(normalization=normalization)
    rng = np.random.default_rng(2)
    physical = rng.normal(1000.0, 20.0, (3, 8, 8)) + rng.exponential(500.0, (3, 8, 8))
    params = [image_parameters(1000.0 + i, 20.0 + i, normalization) for i in range(3)]
    offset = np.array([p[0] for p in params], np.float32)
    scale = np.array([p[1] for p in params], np.float32)
    x = normalize(tf.constant(physical), tf.constant(offset)[:, None, None], tf.constant(scale)[:, None, None], cfg)
    back_np = denormalize(x.numpy(), offset, scale, cfg)
    back_tf = denormalize(tf.constant(x.numpy()), offset, scale, cfg).numpy()
    np.testing.assert_allclose(back_np, physical, rtol=1e-12)
    np.testing.assert_allclose(back_tf, physical, rtol=1e-12)
    x32 = tf.cast(x, tf.float32)
    np.testing.assert_allclose(denormalize(x32, offset, scale, cfg).numpy(), physical, rtol=1e-5)


@pytest.mark.parametrize("normalization", ["robust", "asinh", "none"])
def test_numpy_normalize_matches_tensorflow_and_places_a_physical_mean_for_sigma(normalization):
    cfg = DataConfig(normalization=normalization)
    rng = np.random.default_rng(5)
    physical = rng.normal(1000.0, 20.0, (8, 8)) + rng.exponential(500.0, (8, 8))
    offset, scale, _ = image_parameters(1000.0, 20.0, normalization)
    x_np = normalize(physical, float(offset), float(scale), cfg)
    x_tf = normalize(tf.constant(physical), offset, scale, cfg)
    np.testing.assert_allclose(x_np, np.asarray(x_tf), rtol=1e-12, atol=1e-12)
    # σ at a physical mean: the slope of p = offset + scale·a·sinh(x/a) there, scale·√(1 + u²)
    sigma = rng.uniform(0.5, 2.0, (8, 8))
    u = (physical - float(offset)) / (float(scale) * cfg.asinh_softening)
    slope = {"robust": float(scale), "asinh": float(scale) * np.sqrt(1.0 + u * u), "none": 1.0}[normalization]
    np.testing.assert_allclose(sigma_to_physical_first_order(sigma, x_np, float(scale), cfg), sigma * slope,
                               rtol=1e-13)


@pytest.mark.parametrize("normalization", ["robust", "asinh", "none"])
def test_physical_sigma_is_the_rms_about_mu_of_the_stretched_gaussian_taken_back(normalization):
    """σ_phys² = E[(p(Y) − p(μ))²] for Y ~ N(μ, σ²) in the model's space, p its inverse map to
    physical units, by 80-point Gauss–Hermite quadrature; for small σ that is the first order."""
    cfg = DataConfig(normalization=normalization, asinh_softening=10.0)
    offset, scale = 100.0, 3.0
    mu = np.array([-25.0, 0.0, 4.0, 30.0, 30.0, 55.0, 12.0])
    sigma = np.array([8.0, 0.5, 20.0, 1e-6, 5.0, 0.3, 40.0])
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    to_physical = lambda y: denormalize(y, offset, scale, cfg)  # noqa: E731
    y = mu[:, None] + sigma[:, None] * nodes[None, :]
    expected = np.sqrt((weights * np.square(to_physical(y) - to_physical(mu)[:, None])).sum(1) / weights.sum())
    np.testing.assert_allclose(sigma_to_physical(sigma, mu, scale, cfg), expected, rtol=1e-7)
    small = sigma_to_physical(sigma * 1e-6, mu, scale, cfg)
    np.testing.assert_allclose(small, sigma_to_physical_first_order(sigma * 1e-6, mu, scale, cfg), rtol=1e-5)


def test_index_takes_noise_from_option_header_or_integer_aware_estimate(tmp_path):
    """Through FITS files: unsigned 16-bit counts (int16 + BZERO) with σ = 1.5, with and without NOISE."""
    from astropy.io import fits

    from fitsae.cli import index as index_cli
    from fitsae.data.manifest import Manifest

    counts = np.rint(_noise_field(1.5, 4)).astype(np.uint16)
    fits.PrimaryHDU(counts).writeto(tmp_path / "plain.fits")
    header = fits.Header()
    header["NOISE"] = 1.5
    fits.PrimaryHDU(counts, header=header).writeto(tmp_path / "noise_kw.fits")
    assert fits.getheader(tmp_path / "plain.fits")["BZERO"] == 32768
    out = tmp_path / "m.jsonl"
    assert index_cli.main([str(tmp_path / "plain.fits"), str(tmp_path / "noise_kw.fits"), "--tile", "64",
                           "--out", str(out)]) == 0
    plain, keyword = Manifest.load(out)
    assert plain.noise_source == "diff5" and abs(plain.noise / 1.5 - 1) < 0.04
    assert (keyword.noise, keyword.noise_source) == (1.5, "header")
    assert index_cli.main([str(tmp_path), "--tile", "64", "--noise", "2.5", "--out", str(out)]) == 0
    assert [(r.noise, r.noise_source) for r in Manifest.load(out)] == [(2.5, "config")] * 2


def test_decoded_sigma_is_the_stretched_sigma_capped_at_each_tile_range():
    """A batch of two tiles, each with its own offset, scale and range: σ is the stretch's RMS
    where that lies within max(hi − μ, μ − lo) of the tile, and exactly that reach beyond."""
    cfg = DataConfig(normalization="asinh", asinh_softening=10.0)
    offset, scale = np.array([100.0, 50.0]), np.array([3.0, 2.0])
    lo, hi = np.array([90.0, 40.0]), np.array([400.0, 9000.0])
    mu_phys = np.array([[[[100.0], [390.0]]], [[[60.0], [8000.0]]]])  # (2, 1, 2, 1)
    sigma = np.array([[[[0.5], [30.0]]], [[[1.0], [0.2]]]])  # normalized; 30 = 3 softenings: unsure
    stretched = sigma_to_physical(sigma, normalize(mu_phys, offset[:, None, None, None],
                                                   scale[:, None, None, None], cfg), scale, cfg)
    reach = np.maximum(hi[:, None, None, None] - mu_phys, mu_phys - lo[:, None, None, None])
    assert stretched[0, 0, 1, 0] > reach[0, 0, 1, 0]  # the unsure pixel's RMS is beyond the tile's range
    np.testing.assert_allclose(decoded_sigma(sigma, mu_phys, offset, scale, lo, hi, cfg),
                               np.minimum(stretched, reach), rtol=1e-12)
    assert np.sum(stretched < reach) == 3  # the three others keep the stretch's σ
    one = decoded_sigma(sigma[1, 0], mu_phys[1, 0], offset[1], scale[1], lo[1], hi[1], cfg)  # one tile, scalars
    np.testing.assert_allclose(one, np.minimum(stretched, reach)[1, 0], rtol=1e-12)
