"""Robust statistics, their fallbacks, and the exact inverse of the normalization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from fitsae.data.config import DataConfig
from fitsae.data.normalize import denormalize, image_parameters, normalize, robust_stats
from data_helpers import gaussian_field


def test_noise_and_background_are_recovered_despite_sources():
    rng = np.random.default_rng(0)
    data = gaussian_field(rng, (128, 128), background=300.0, sigma=7.0).astype(np.float64)
    data += np.linspace(0, 50, 128)[None, :]  # a sky gradient does not inflate the noise
    stats = robust_stats(data)
    assert stats.noise_source == "mad"
    assert abs(stats.noise / 7.0 - 1) < 0.05
    assert abs(stats.offset - 325.0) < 3.0


def test_fallbacks_for_degenerate_noise():
    flat_int = np.full((8, 8), 5, np.int16)
    assert robust_stats(flat_int, header_noise=0.25).noise_source == "header"
    stats = robust_stats(flat_int, quantum=2.0)
    assert stats.noise_source == "quantization" and stats.noise == pytest.approx(2.0 / math.sqrt(12))
    stripes = np.tile(np.array([0.0, 0.0, 0.0, 9.0]), (8, 2))  # MAD of differences is 0, std is not
    assert robust_stats(stripes).noise_source == "std"
    assert robust_stats(np.full((4, 4), 3.0)).noise_source == "unit"
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
