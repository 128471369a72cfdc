"""Metrics as exact sums: errors against input and truth, bias, ℓ∞, robust quantiles, bands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fitsae.evaluate.bands import BAND_EDGES
from fitsae.evaluate.calibration import Z_BIN_EDGES
from fitsae.evaluate.error_sums import ABS_ERROR_EDGES, hist_quantile, psnr, tile_error_over_noise
from fitsae.evaluate.metrics import DataRange, MetricBook
from fitsae.evaluate.tallies import KeptSums


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
    snr = np.array([[0.0, 1.0, 5.0, 50.0, -4.0, -40000.0], [2.0, 20.0, 150.0, 1000.0, -6.0, 0.5]])
    err_over_noise = np.array([[1.0, -1.0, 2.0, 3.0, 0.25, 40000.0], [0.5, 4.0, -6.0, 80.0, 7.0, 0.0]])
    x = (background[:, None] + snr * noise[:, None]).reshape(2, 2, 3, 1)
    recon = x - (err_over_noise * noise[:, None]).reshape(2, 2, 3, 1)
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
    # Expected band of each pixel from the edges −5, 3, 10, 30, 100, 300: strongly negative pixels
    # (an artifact at −40 000σ, a −6σ dip) have a band of their own, away from the faint one.
    members = {0: [40000.0, 7.0], 1: [1.0, -1.0, 0.25, 0.5, 0.0], 2: [2.0], 3: [4.0], 4: [3.0], 5: [-6.0], 6: [80.0]}
    total = float((err_over_noise**2).sum())
    for k, band in enumerate(bands):
        e = np.abs(np.array(members[k]))
        assert band["pixel_fraction"] == pytest.approx(len(e) / 12)
        assert band["rmse_over_noise"] == pytest.approx(math.sqrt(np.mean(e**2)))
        assert band["share_of_error"] == pytest.approx(float((e**2).sum()) / total)
        # One pixel: its |error| is the median and the 99th percentile, to the histogram's bin.
        if len(e) == 1:
            assert band["median_abs_error_over_noise"] == pytest.approx(e[0], rel=0.05)
            assert band["p99_abs_error_over_noise"] == pytest.approx(e[0], rel=0.05)
    # The faint band's typical pixel is not ruled by the artifact: its median stays below 1σ.
    assert bands[1]["median_abs_error_over_noise"] == pytest.approx(0.5, rel=0.05)
    assert sum(b["share_of_error"] for b in bands) == pytest.approx(1.0)
    assert total / 12 == pytest.approx(pooled.summary(1.0)["rmse_over_noise"] ** 2)
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


def test_error_sums_give_bias_linf_and_truth_figures_exactly():
    # Two 1×3 tiles, σ = 2 and 4; e = x̂ − x.
    x = np.array([[[10.0, 12.0, 14.0]], [[0.0, 4.0, -4.0]]])
    recon = x + np.array([[[1.0, -3.0, 2.0]], [[8.0, 0.0, -4.0]]])
    noise = np.array([2.0, 4.0])
    truth = np.array([[[10.5, 11.0, 15.0]], [[np.nan] * 3]])  # the second tile's image has no truth
    book = MetricBook()
    sums = book.errors("m")
    sums.update(x, recon, noise, truth)
    book.reduce()
    out = sums.summary(peak=18.0)
    e = np.array([1.0, -3.0, 2.0, 8.0, 0.0, -4.0])
    en = e / np.repeat(noise, 3)
    assert out["mean_error"] == pytest.approx(e.mean(), rel=1e-15)
    assert out["mean_error_over_noise"] == pytest.approx(en.mean(), rel=1e-15)
    assert out["max_abs_error"] == 8.0 and out["max_abs_error_over_noise"] == 2.0
    assert out["rmse_over_noise"] == pytest.approx(math.sqrt(np.mean(en ** 2)), rel=1e-15)
    et = np.array([0.5, -2.0, 1.0])  # recon − truth on the first tile only
    assert out["n_pixels_truth"] == 3 and out["n_pixels"] == 6
    assert out["mse_truth"] == pytest.approx(np.mean(et ** 2), rel=1e-15)
    assert out["rmse_over_noise_truth"] == pytest.approx(math.sqrt(np.mean((et / 2) ** 2)), rel=1e-15)
    assert out["mean_error_truth"] == pytest.approx(et.mean(), rel=1e-15)
    assert out["max_abs_error_truth"] == 2.0 and out["max_abs_error_over_noise_truth"] == 1.0
    # Robust figures: |e|/σ = 0.5, 1.5, 1, 2, 0, 1 → median 1 (to the histogram's bin), p99 at the max.
    assert out["median_abs_error_over_noise"] == pytest.approx(1.0, rel=0.05)
    assert out["p99_abs_error_over_noise"] == pytest.approx(2.0, rel=0.05)

    no_truth = MetricBook().errors("plain")
    no_truth.update(x, recon, noise)
    plain = no_truth.summary(peak=18.0)
    assert plain["n_pixels_truth"] == 0
    assert all(math.isnan(plain[k]) for k in ("rmse_over_noise_truth", "mean_error_truth", "max_abs_error_truth"))
    assert plain["mean_error"] == out["mean_error"]


def test_error_sums_survive_the_reduction_and_batching():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 4, 4))
    recon = x + rng.normal(scale=0.3, size=x.shape)
    truth = x + rng.normal(scale=0.1, size=x.shape)
    noise = rng.uniform(0.5, 2.0, size=6)
    whole, split = MetricBook().errors("w"), MetricBook().errors("s")
    whole.update(x, recon, noise, truth)
    for i in range(6):
        split.update(x[i:i + 1], recon[i:i + 1], noise[i:i + 1], truth[i:i + 1])
    copy = MetricBook().errors("c")
    copy.load(whole.vector())
    copy.load_maxima(whole.maxima())
    a, b, c = whole.summary(1.0), split.summary(1.0), copy.summary(1.0)
    assert a == c
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-12), key


def test_quantiles_from_the_histogram_are_within_a_bin_and_exact_at_zero():
    rng = np.random.default_rng(8)
    values = np.abs(rng.standard_cauchy(50001))
    book = MetricBook().errors("q")
    book.update(np.zeros((1, values.size)), values[None], np.ones(1))
    out = book.summary(1.0)
    # Interpolated within its bin (4.7 % wide), a quantile of a smooth sample lands much closer.
    assert out["median_abs_error_over_noise"] == pytest.approx(np.median(values), rel=0.01)
    assert out["p99_abs_error_over_noise"] == pytest.approx(np.quantile(values, 0.99), rel=0.01)
    assert out["max_abs_error_over_noise"] == values.max()
    # Exact zeros (a lossless method, or most pixels of a near-lossless one) read exactly 0, not a bin's edge.
    exact = MetricBook().errors("exact")
    exact.update(np.ones((2, 3)), np.ones((2, 3)), np.ones(2))
    assert exact.summary(1.0)["median_abs_error_over_noise"] == 0.0
    assert exact.summary(1.0)["p99_abs_error_over_noise"] == 0.0
    mostly = MetricBook().errors("mostly")
    mostly.update(np.zeros((1, 7)), np.array([[0.0, 0, 0, 0, 0, 0, 3.0]]), np.ones(1))
    assert mostly.summary(1.0)["median_abs_error_over_noise"] == 0.0
    # Below the first edge and above the last: bounded by 0 and by the largest value seen.
    counts = np.zeros(len(ABS_ERROR_EDGES) + 2)
    counts[1], counts[-1] = 1.0, 1.0
    assert 0.0 < hist_quantile(counts, 0.5, 2e7) <= ABS_ERROR_EDGES[0]
    assert ABS_ERROR_EDGES[-1] <= hist_quantile(counts, 0.99, 2e7) <= 2e7
    assert math.isnan(hist_quantile(np.zeros_like(counts), 0.5, 0.0))


def test_the_error_against_the_truth_is_split_by_the_bands_of_the_observed_pixel():
    """Faint pixels reconstructed 1σ off the truth, bright ones 4σ off: each band says its own,
    and a tile without truth (NaN) adds nothing to the truth figures."""
    rng = np.random.default_rng(3)
    truth = np.where(rng.random((2, 8, 8)) < 0.25, 50.0, 0.0)  # background 0, σ = 1: bands "-5–3σ", "30–100σ"
    x = truth + rng.normal(scale=0.1, size=truth.shape)
    recon = truth + np.where(truth > 0, 4.0, 1.0)
    book = MetricBook()
    book.bands("b").update(x, recon, np.zeros(2), np.ones(2), truth)
    book.bands("b").update(x, recon + 100.0, np.zeros(2), np.ones(2), np.full_like(truth, np.nan))
    book.reduce()
    bands = {(b["snr_low"], b["snr_high"]): b for b in book["b"].summary()}
    assert bands[(-5.0, 3.0)]["rmse_over_noise_truth"] == pytest.approx(1.0)
    assert bands[(30.0, 100.0)]["rmse_over_noise_truth"] == pytest.approx(4.0)
    assert bands[(10.0, 30.0)]["rmse_over_noise_truth"] is None


def test_sigma_is_judged_per_band_where_the_pooled_std_hides_it():
    """σ twice too wide on faint pixels and twice too narrow on bright ones: the pooled std of
    z = (x − x̂)/σ comes out near 1, each band says its own (0.5 and 2), across a reduce."""
    rng = np.random.default_rng(4)
    truth = np.where(rng.random((2, 16, 16)) < 0.2, 50.0, 0.0)  # background 0, σ_noise 1: bands "-5–3σ", "30–100σ"
    x = truth + rng.normal(size=truth.shape)
    error = rng.normal(size=truth.shape) * np.where(truth > 0, 3.0, 1.0)
    sigma = np.where(truth > 0, 1.5, 2.0)
    book = MetricBook()
    for i in range(2):
        book.bands("b").update(x[i:i + 1], x[i:i + 1] - error[i:i + 1], np.zeros(1), np.ones(1), None,
                               sigma[i:i + 1])
    book.reduce()
    bands = {(b["snr_low"], b["snr_high"]): b for b in book["b"].summary()}
    faint, bright = error[truth == 0] / 2.0, error[truth > 0] / 1.5
    assert bands[(-5.0, 3.0)]["sigma_z_std_physical"] == pytest.approx(np.std(faint))
    assert bands[(30.0, 100.0)]["sigma_z_std_physical"] == pytest.approx(np.std(bright))
    assert bands[(30.0, 100.0)]["coverage_1sigma_physical"] == pytest.approx(np.mean(np.abs(bright) < 1))
    assert np.std(faint) < 0.6 and np.std(bright) > 1.7 and 0.8 < np.std(error / sigma) < 1.25
    assert bands[(10.0, 30.0)]["sigma_z_std_physical"] is None
