"""Rate–distortion of a trained β-VAE: one network, a whole curve, ordered by β."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from bvae_helpers import dense_config, toy_images, train

from fitsae.data.config import DataConfig
from fitsae.evaluate.bvae_rd import default_logbetas, plot_rate_distortion, rate_distortion
from fitsae.models.bvae import BetaVAE

# Trained over log β ∈ [-2, 1.5]; scored where the toy data have a real trade-off. Below β ≈ 0.1 an
# 8-value latent has captured the blobs and further rate only encodes noise, so the distortion is
# flat there (within training noise) rather than strictly falling.
REPO = Path(__file__).resolve().parents[1]
LOGBETAS = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]


@pytest.fixture(scope="module")
def trained():
    """A small dense β-VAE trained on 8×8 toy blobs (σ_noise = 1) over log β ∈ [-2, 1.5]."""
    tf.keras.utils.set_random_seed(1)
    model = BetaVAE(dense_config(latent=8, hidden=(64, 64), logbeta_range=(-2.0, 1.5), kl_warmup_steps=300), (8, 8, 1))
    train(model, toy_images(4096, 8, seed=1), steps=1000, batch=64, lr=3e-3, seed=1)
    return model


def held_out(n=512, batch=128, scale=1.0, offset=0.0, seed=2):
    images = toy_images(n, 8, seed=seed)
    return [
        {"x": images[i:i + batch], "noise": np.ones(len(images[i:i + batch]), np.float32),
         "scale": np.full(len(images[i:i + batch]), scale, np.float32),
         "offset": np.full(len(images[i:i + batch]), offset, np.float32)}
        for i in range(0, n, batch)
    ]


@pytest.mark.slow
def test_rate_falls_and_distortion_rises_as_beta_grows(trained):
    rows = rate_distortion(trained, held_out(), LOGBETAS)
    for r in rows:
        print(f"logbeta {r['logbeta']:+.2f}  rate {r['rate_nats_per_image']:7.3f} nats/image "
              f"{r['bits_per_pixel']:.4f} bit/px  mse {r['mse']:.4f}  rmse/σ {r['rmse_over_noise']:.4f}")
    assert [r["logbeta"] for r in rows] == LOGBETAS
    rate = [r["rate_nats_per_image"] for r in rows]
    mse = [r["mse"] for r in rows]
    assert all(a > b for a, b in zip(rate, rate[1:])), rate
    assert all(a < b for a, b in zip(mse, mse[1:])), mse
    rmse = [r["rmse_over_noise"] for r in rows]
    assert all(a < b for a, b in zip(rmse, rmse[1:])), rmse
    # the curve spans a real trade-off, not a flat line wiggling by noise
    assert rate[0] > 2 * rate[-1] and mse[-1] > 1.2 * mse[0]


@pytest.mark.slow
def test_rd_rows_are_consistent_and_unit_aware(trained):
    rows = rate_distortion(trained, held_out(), [0.0])
    (r,) = rows
    assert r["n_images"] == 512 and r["beta"] == 1.0
    assert r["bits_per_pixel"] == pytest.approx(r["rate_nats_per_image"] / (64 * math.log(2)))
    assert r["rmse_over_noise"] == pytest.approx(math.sqrt(r["mse"]), rel=1e-9)  # σ_noise = 1
    assert r["mean_z"]["mse"] > 0
    # physical units: same tiles stored with scale 3 and an offset → mse × 9, rate and rmse/σ unchanged
    (p,) = rate_distortion(trained, held_out(scale=3.0, offset=100.0), [0.0], data_cfg=DataConfig())
    assert p["rate_nats_per_image"] == pytest.approx(r["rate_nats_per_image"], rel=1e-6)
    assert p["mse"] == pytest.approx(9 * r["mse"], rel=1e-4)
    assert p["rmse_over_noise"] == pytest.approx(r["rmse_over_noise"], rel=1e-4)


@pytest.mark.slow
def test_sigma_head_is_calibrated_at_the_posterior_mean(trained):
    """Where a sample's error is much larger than the mean's (large β), σ trained on samples was
    too wide there (std of (x − μ)/σ 0.80 at log β = 1.5, measured); trained at the mean it fits."""
    rows = rate_distortion(trained, held_out(), [0.0, 1.0, 1.5])
    assert rows[-1]["rmse_over_noise"] > 1.3 * rows[-1]["mean_z"]["rmse_over_noise"]  # the regime that matters
    for r in rows:
        calibration = r["mean_z"]
        print(f"log β {r['logbeta']:+.1f}: std z {calibration['sigma_z_std']:.3f}, "
              f"1σ coverage {calibration['coverage_1sigma']:.3f}")
        assert abs(calibration["sigma_z_std"] - 1) < 0.1
        assert abs(calibration["coverage_1sigma"] - 0.683) < 0.04
        assert calibration["coverage_1sigma"] < calibration["coverage_2sigma"]


@pytest.mark.slow
def test_coded_rows_count_the_bytes_whose_decoding_gives_the_scored_image(trained):
    """The β-VAE's coded rate is real: the bytes decode to the integers, and those to the very
    image the coded errors were measured on; tables fitted on other (training) images."""
    from fitsae.entropy import decode_latents, encode_latents
    from fitsae.evaluate.bvae_coding import code_tiles, fit_operating_points

    points = fit_operating_points(trained, held_out(seed=5), [0.0, 1.0], crop=lambda x: x)
    x = held_out()[0]["x"]
    logbeta = tf.fill([len(x)], 0.0)
    recon, sizes, _ = code_tiles(trained, points[0], x)
    tables = points[0].tables
    k = tables.symbols(trained.encode(tf.constant(x), logbeta).numpy())
    decoded = []
    for tile, size in zip(k, sizes, strict=True):
        data, escapes = encode_latents(tables, tile[None])
        assert len(data) == size
        decoded.append(decode_latents(tables, data, escapes, tile[None].shape)[0])
    np.testing.assert_array_equal(np.stack(decoded), k)
    np.testing.assert_array_equal(recon, trained.decode_mean(tf.constant(tables.values(np.stack(decoded))), logbeta).numpy())
    rows = rate_distortion(trained, held_out(), [0.0, 1.0], points=points)
    assert rows[0]["coded"]["bits_per_pixel_coded"] > rows[1]["coded"]["bits_per_pixel_coded"] > 0


def test_default_grid_spans_the_trained_range():
    model = BetaVAE(dense_config(latent=2, hidden=(4,), logbeta_range=(-3.0, 1.0)), (8, 8, 1))
    grid = default_logbetas(model, 5)
    assert grid == [-3.0, -2.0, -1.0, 0.0, 1.0]


def test_rd_refuses_tiles_smaller_than_a_dense_model():
    model = BetaVAE(dense_config(latent=2, hidden=(4,)), (8, 8, 1))
    with pytest.raises(ValueError, match="trained on 8×8"):
        rate_distortion(model, [{"x": np.zeros((1, 4, 4, 1), np.float32), "noise": np.ones(1)}], [0.0])


def test_rd_plot_with_ae_pca_and_fpack(tmp_path):
    rows = [
        {"logbeta": lb, "bits_per_pixel": bpp, "rmse_over_noise": e}
        for lb, bpp, e in ((-2.0, 0.5, 1.1), (0.0, 0.2, 1.4), (1.0, 0.05, 2.0))
    ]
    report = {
        "results": [{"eta": 1, "bits_per_pixel": 0.5, "ae": {"rmse_over_noise": 1.5}, "pca": {"rmse_over_noise": 1.8}},
                    {"eta": 2, "bits_per_pixel": 1.0, "ae": {"rmse_over_noise": 1.2}, "pca": {"rmse_over_noise": 1.4}}],
        "baselines": {"fpack": [{"compression_type": "RICE_1", "bits_per_pixel": 4.0, "rmse_over_noise": 0.3}]},
    }
    path = plot_rate_distortion(rows, tmp_path / "rd.png", report)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.fixture(scope="module")
def fits_run(tmp_path_factory):
    """Real FITS files → `fitsae train` (kind bvae, conv, 40 steps); returns the run and test directories."""
    from fitsae.cli import simulate as simulate_cli
    from fitsae.cli import train as train_cli

    base = tmp_path_factory.mktemp("bvae_fits")
    assert simulate_cli.main(["--kind", "toy", "--n", "12", "--size", "32", "--out", str(base / "train"), "--seed", "1"]) == 0
    assert simulate_cli.main(["--kind", "toy", "--n", "4", "--size", "32", "--out", str(base / "test"), "--seed", "2"]) == 0
    run = base / "run"
    code = train_cli.main([
        "--config", str(REPO / "train" / "bvae.yaml"), "--run-dir", str(run),
        "--set", f"data.paths=[{base / 'train'}]", "--set", "data.tile=32", "--set", "data.crop=null",
        "--set", "data.batch_size=4", "--set", "model.filters=[8,8]", "--set", "model.latent_channels=4",
        "--set", "model.bvae.kl_warmup_steps=10", "--set", "train.steps=40", "--set", "train.log_every=20",
        "--set", "train.image_every=0", "--set", "train.checkpoint_every=40", "--set", "train.export=false",
    ])
    assert code == 0
    return {"run": run, "test": base / "test"}


@pytest.mark.slow
def test_fits_end_to_end_simulate_train_and_rd_report(fits_run, tmp_path):
    """Real FITS files → `fitsae train` (kind bvae, conv) → RD report on held-out tiles through the Pipeline."""
    from fitsae.cli import evaluate as evaluate_cli
    from fitsae.evaluate.bvae_rd import format_bvae_table
    from fitsae.train.checkpoints import load_model

    run, test = fits_run["run"], fits_run["test"]
    cfg, model, step = load_model(run)
    assert step == 40
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--run-dir", str(run), "--data", str(test), "--out", str(out),
                              "--logbetas=-2,0,1", "--batch-size", "4"]) == 0
    report = json.loads((out / "bvae_rd.json").read_text())
    rows = report["results"]
    assert [r["logbeta"] for r in rows] == [-2.0, 0.0, 1.0]
    assert all(r["n_images"] == 4 and r["rate_nats_per_image"] > 0 and r["mse"] > 0 for r in rows)
    assert all(0 < r["mean_z"]["coverage_1sigma"] < r["mean_z"]["coverage_2sigma"] for r in rows)
    assert report["model"]["checkpoint_step"] == 40 and report["units"] == "physical"
    assert (out / "bvae_rd.png").read_bytes()[:4] == b"\x89PNG"
    assert "log10 β" in format_bvae_table(report)
    assert evaluate_cli.main(["--run-dir", str(run), "--data", str(test), "--out", str(out),
                              "--logbetas", "x"]) == 2


@pytest.mark.slow
def test_watch_scores_a_bvae_run_as_a_plain_evaluation_does(fits_run, tmp_path, capsys):
    """`--watch` and a plain evaluation go through one dispatch (the model's rate_control): the
    watcher scores the finished run's final checkpoint with the same rows, and stops by itself."""
    from fitsae.cli import evaluate as evaluate_cli

    args = ["--run-dir", str(fits_run["run"]), "--data", str(fits_run["test"]), "--logbetas=-2,0,1", "--batch-size", "4"]
    assert evaluate_cli.main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert evaluate_cli.main([*args, "--out", str(tmp_path / "watched"), "--watch", "--poll", "0.1",
                              "--watch-timeout", "120"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    plain = json.loads((tmp_path / "plain" / "bvae_rd.json").read_text())
    for path in (tmp_path / "watched" / "bvae_rd.json", tmp_path / "watched" / "steps" / "step-40" / "bvae_rd.json"):
        assert json.loads(path.read_text())["results"] == plain["results"], path
