"""Issue 13, item 8: the report's headline for the model is the plain mask, the budget is the codec's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from eval_helpers import clean_env
from fitsae.evaluate.report import format_table


def _row(eta, mask, budget, pca):
    return {"eta": eta, "ae": {"rmse_over_noise": budget, "bits_per_pixel_coded": 0.5 * eta, "mean_eta_kept": 1.0},
            "ae_fixed_mask": {"rmse_over_noise": mask, "bits_per_pixel_coded": 0.6 * eta},
            "pca": {"rmse_over_noise": pca, "bits_per_pixel_coded": 0.4 * eta}}


def test_the_table_heads_with_the_plain_mask_and_labels_the_budget_as_the_codec():
    # The budget beats PCA, the plain mask does not: the winner is judged on the model's own result.
    table = format_table({"results": [_row(1, 3.0, 1.0, 2.0), _row(2, 1.5, 1.0, 2.0)]}).splitlines()
    header = next(line for line in table if line.lstrip().startswith("eta"))
    assert header.index("model rmse/σ") < header.index("PCA rmse/σ") < header.index("codec rmse/σ")
    assert "model = the plain mask" in "\n".join(table) and "codec = the budget" in "\n".join(table)
    first, second = (line for line in table if line.lstrip()[:1].isdigit())
    assert "PCA " in first.split("|")[0] and "model" in second.split("|")[0]
    assert first.split()[2] == "3.0000" and second.split()[2] == "1.5000"  # the mask's rmse is the model column


def _linear_fields(path, n=2000, seed=0):
    """4×4 images from a 16-dim Gaussian with a few strong directions (the linear-AE-vs-PCA data)."""
    rng = np.random.default_rng(seed)
    variances = np.array([12.0, 6.0, 3.0, 1.5] + [0.3] * 12)
    basis, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(16, 16)))
    data = (rng.normal(size=(n, 16)) * np.sqrt(variances)) @ basis.T
    hdu = fits.PrimaryHDU(data.reshape(n, 4, 4).astype(np.float32))
    hdu.header["NOISE"] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    hdu.writeto(path)
    return path


@pytest.mark.slow
def test_the_plain_mask_error_falls_with_eta_on_linear_ae_vs_pca_data(tmp_path):
    """A linear dense AE trained with η sampling orders its units like PCA (nested dropout), so the
    model's own error — exactly η channels — must fall with every η: a regression test of the
    headline, which the budget (monotone by construction) cannot stand in for."""
    train = _linear_fields(tmp_path / "train" / "train.fits")
    test = _linear_fields(tmp_path / "test" / "test.fits", n=400, seed=1)
    config = tmp_path / "linear.yaml"
    config.write_text(
        "data: {paths: [" + str(train) + "], tile: 4, batch_size: 128, normalization: none}\n"
        "model: {kind: dense, latent_channels: 4, hidden: [], activation: linear}\n"
        "optimizer: {learning_rate: 0.01, schedule: cosine, final_fraction: 0.05}\n"
        "train: {steps: 300, log_every: 300, image_every: 0, checkpoint_every: 300, export: false, progress: false}\n")
    run = [sys.executable, "-m", "fitsae"]
    subprocess.run([*run, "train", "--config", str(config), "--run-dir", str(tmp_path / "run")],
                   check=True, env=clean_env(), capture_output=True)
    out = tmp_path / "eval"
    proc = subprocess.run([*run, "evaluate", "--run-dir", str(tmp_path / "run"), "--data", str(test.parent),
                           "--out", str(out), "--fpack-tiles", "0", "--no-plots", "--no-tensorboard",
                           "--pca-tiles", "400"], env=clean_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    mask = [row["ae_fixed_mask"]["mse"] for row in report["results"]]
    assert [row["eta"] for row in report["results"]] == [1, 2, 3, 4]
    assert all(b < 0.95 * a for a, b in zip(mask, mask[1:])), mask
    assert report["ae_fixed_mask_nonincreasing_in_eta"] is True
