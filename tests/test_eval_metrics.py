"""Metrics as exact sums, and the fpack baseline through astropy's real tile compression."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fitsae.evaluate import fpack
from fitsae.evaluate.metrics import (BAND_EDGES, Z_BIN_EDGES, DataRange, KeptSums, MetricBook, psnr,
                                     tile_error_over_noise)


def _batch(rng, b=6, h=16, w=16):
    x = rng.normal(size=(b, h, w, 1))
    mu = x + rng.normal(scale=0.5, size=x.shape)
    log_var = np.full(x.shape, np.log(0.25)) + rng.normal(scale=0.1, size=x.shape)
    offset = rng.normal(size=b) * 10
    scale = rng.uniform(0.5, 3.0, size=b)
    noise = rng.uniform(0.9, 1.1, size=b)
    return x, mu, log_var, offset, scale, noise


def _phys(a, offset, scale):
    return a * scale[:, None, None, None] + offset[:, None, None, None]


def test_gaussian_sums_match_direct_formulas_and_do_not_depend_on_batching():
    rng = np.random.default_rng(0)
    batches = [_batch(rng) for _ in range(3)]
    whole = MetricBook()
    split = MetricBook()
    for x, mu, s, off, sc, noise in batches:
        whole.gaussian("ae").update(x, mu, s, _phys(x, off, sc), _phys(mu, off, sc), noise * sc)
        for i in range(len(x)):  # one tile at a time: sums must not care
            sl = slice(i, i + 1)
            split.gaussian("ae").update(x[sl], mu[sl], s[sl], _phys(x, off, sc)[sl],
                                        _phys(mu, off, sc)[sl], (noise * sc)[sl])
    whole.reduce()  # a world of one: reduction is the identity, but exercises pack/unpack
    a, b = whole["ae"].summary(peak=10.0), split["ae"].summary(peak=10.0)
    for key in ("mse", "rmse_over_noise", "psnr", "nll", "sigma_z_std", "coverage_1sigma"):
        assert a[key] == pytest.approx(b[key], rel=1e-12), key

    x = np.concatenate([t[0] for t in batches])
    mu = np.concatenate([t[1] for t in batches])
    s = np.concatenate([t[2] for t in batches])
    off = np.concatenate([t[3] for t in batches])
    sc = np.concatenate([t[4] for t in batches])
    noise = np.concatenate([t[5] for t in batches])
    err_phys = _phys(x, off, sc) - _phys(mu, off, sc)
    assert a["mse"] == pytest.approx(np.mean(err_phys**2), rel=1e-12)
    per_noise = (x - mu) / noise[:, None, None, None]  # physical error / physical noise
    assert a["rmse_over_noise"] == pytest.approx(np.sqrt(np.mean(per_noise**2)), rel=1e-12)
    assert a["psnr"] == pytest.approx(10 * np.log10(100.0 / np.mean(err_phys**2)), rel=1e-12)
    z = (x - mu) / np.exp(0.5 * s)
    assert a["sigma_z_std"] == pytest.approx(np.std(z), rel=1e-10)
    assert a["coverage_1sigma"] == pytest.approx(np.mean(np.abs(z) < 1))
    assert a["coverage_2sigma"] == pytest.approx(np.mean(np.abs(z) < 2))
    nll = 0.5 * (s + (x - mu) ** 2 * np.exp(-s) + np.log(2 * np.pi))
    assert a["nll"] == pytest.approx(np.mean(nll), rel=1e-12)
    assert sum(a["z_hist"]) == x.size and len(a["z_hist"]) == len(Z_BIN_EDGES) + 1


def test_calibrated_gaussian_has_unit_z_std_and_nominal_coverage():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.5, 2.0, size=(8, 32, 32, 1))
    mu = rng.normal(size=sigma.shape)
    x = mu + sigma * rng.normal(size=sigma.shape)
    book = MetricBook()
    book.gaussian(3).update(x, mu, 2 * np.log(sigma), x, mu, np.ones(8))
    out = book[3].summary(peak=1.0)
    assert out["sigma_z_std"] == pytest.approx(1.0, abs=0.02)
    assert out["coverage_1sigma"] == pytest.approx(0.6827, abs=0.01)
    assert out["coverage_2sigma"] == pytest.approx(0.9545, abs=0.01)


def test_psnr_and_range():
    assert psnr(0.0, 1.0) == math.inf
    assert psnr(1.0, 10.0) == pytest.approx(20.0)
    r = DataRange()
    r.update(np.array([[-2.0, 5.0]]))
    r.update(np.array([3.0]))
    r.reduce()
    assert r.peak == 7.0


def test_fpack_rice_error_follows_quantization_step_and_rate_grows_with_level():
    rng = np.random.default_rng(2)
    sigma = 3.0
    tile = (100.0 + sigma * rng.normal(size=(64, 64))).astype(np.float32)
    last_bits = 0.0
    for q in (1.0, 2.0, 4.0, 8.0, 16.0):
        out = fpack.roundtrip(tile, fpack.FpackSetting("RICE_1", q), tile_id=5)
        rmse_over_noise = np.sqrt(np.mean((out.decoded - tile) ** 2)) / sigma
        # Dithered quantization with step σ/q leaves uniform error: rms = step/√12.
        assert rmse_over_noise == pytest.approx(1.0 / (q * np.sqrt(12.0)), rel=0.15)
        bits = 8.0 * out.heap_bytes / tile.size
        assert last_bits < bits < 32.0
        last_bits = bits
        assert out.table_bytes > 0


def test_fpack_hcompress_loses_more_at_larger_scale():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:32, :32]
    tile = (50 * np.exp(-((xx - 16) ** 2 + (yy - 12) ** 2) / 20.0) + rng.normal(size=(32, 32))).astype(np.float32)
    errors, bits = [], []
    for s in (1.0, 4.0, 16.0):
        out = fpack.roundtrip(tile, fpack.FpackSetting("HCOMPRESS_1", 4.0, s))
        errors.append(np.sqrt(np.mean((out.decoded - tile) ** 2)))
        bits.append(out.heap_bytes * 8.0 / tile.size)
    assert errors[0] < errors[1] < errors[2]
    assert bits[0] > bits[1] > bits[2]


def test_fpack_rejects_tiles_hcompress_cannot_take():
    assert fpack.applicable(fpack.FpackSetting("HCOMPRESS_1", 4.0, 2.5), (3, 8)) is not None
    assert fpack.applicable(fpack.FpackSetting("RICE_1", 4.0), (3, 8)) is None
    with pytest.raises(ValueError, match="2-D"):
        fpack.roundtrip(np.zeros((2, 4, 4)), fpack.DEFAULT_SETTINGS[0])


def test_paired_change_is_the_pooled_change_with_the_tile_scatter_as_its_error():
    rng = np.random.default_rng(4)
    book = MetricBook()
    pooled = {1: book.errors("eta1"), 2: book.errors("eta2")}
    change = book.paired("change")
    before_all, after_all = [], []
    for _ in range(3):  # batches of tiles of equal size
        x, mu, _, offset, scale, noise = _batch(rng, b=5)
        mu2 = mu + rng.normal(scale=0.2, size=x.shape)
        xp, noise_p = _phys(x, offset, scale), noise * scale
        r1, r2 = _phys(mu, offset, scale), _phys(mu2, offset, scale)
        pooled[1].update(xp, r1, noise_p)
        pooled[2].update(xp, r2, noise_p)
        before, after = tile_error_over_noise(xp, r1, noise_p), tile_error_over_noise(xp, r2, noise_p)
        change.update(before, after)
        before_all.append(before)
        after_all.append(after)
    d = np.concatenate(after_all) - np.concatenate(before_all)
    got = change.summary()
    assert got["n_tiles"] == 15
    assert got["mean_change"] == pytest.approx(d.mean(), rel=1e-12)
    assert got["standard_error"] == pytest.approx(d.std(ddof=1) / math.sqrt(d.size), rel=1e-9)
    rmse = {k: v.summary(1.0)["rmse_over_noise"] for k, v in pooled.items()}
    assert got["mean_change"] == pytest.approx(rmse[2] ** 2 - rmse[1] ** 2, rel=1e-10)
    one = MetricBook().paired("one")
    one.update(np.array([1.0]), np.array([2.0]))
    assert math.isnan(one.summary()["standard_error"])


def test_band_sums_split_the_pooled_error_by_the_true_pixels_brightness():
    # Two tiles with their own background and noise; pixels placed at chosen signal-to-noise.
    background, noise = np.array([100.0, -5.0]), np.array([2.0, 0.5])
    snr = np.array([[0.0, 1.0, 5.0, 50.0], [2.0, 20.0, 150.0, 1000.0]])
    err_over_noise = np.array([[1.0, -1.0, 2.0, 3.0], [0.5, 4.0, -6.0, 80.0]])
    x = (background[:, None] + snr * noise[:, None]).reshape(2, 2, 2, 1)
    recon = x - (err_over_noise * noise[:, None]).reshape(2, 2, 2, 1)
    book = MetricBook()
    whole, split = book.bands("whole"), book.bands("split")
    whole.update(x, recon, background, noise)
    for i in range(2):  # batching does not change the sums
        split.update(x[i:i + 1], recon[i:i + 1], background[i:i + 1], noise[i:i + 1])
    pooled = MetricBook().errors("pooled")
    pooled.update(x, recon, noise)
    bands = whole.summary()
    assert bands == split.summary()
    assert [(b["snr_low"], b["snr_high"]) for b in bands] == list(zip((None, *BAND_EDGES), (*BAND_EDGES, None)))
    # Expected band of each pixel from the edges 3, 10, 30, 100, 300.
    members = {0: [1.0, -1.0, 0.5], 1: [2.0], 2: [4.0], 3: [3.0], 4: [-6.0], 5: [80.0]}
    total = float((err_over_noise**2).sum())
    for k, band in enumerate(bands):
        e = np.array(members[k])
        assert band["pixel_fraction"] == pytest.approx(len(e) / 8)
        assert band["rmse_over_noise"] == pytest.approx(math.sqrt(np.mean(e**2)))
        assert band["share_of_error"] == pytest.approx(float((e**2).sum()) / total)
    assert sum(b["share_of_error"] for b in bands) == pytest.approx(1.0)
    assert total / 8 == pytest.approx(pooled.summary(1.0)["rmse_over_noise"] ** 2)
    empty = MetricBook().bands("empty")
    empty.update(x[:, :1, :1], recon[:, :1, :1], background, noise)  # only faint pixels
    assert empty.summary()[-1]["rmse_over_noise"] is None and empty.summary()[-1]["pixel_fraction"] == 0.0


def test_kept_sums_count_the_chosen_channels_exactly():
    sums = KeptSums(4)
    sums.update(np.array([1, 3, 3]))
    sums.update(np.array([4]))
    assert sums.summary() == {"mean_eta_kept": pytest.approx(11 / 4), "tiles_by_eta_kept": {"1": 1, "3": 2, "4": 1}}
    other = KeptSums(4)
    other.load(sums.vector())
    assert other.summary() == sums.summary()
