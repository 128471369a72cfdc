"""Issue 13, item 2: σ calibration in physical units, checked against what ``fitsae decompress --sigma`` writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from astropy.io import fits

from eval_helpers import CONV, run_fitsae, write_fields


@pytest.mark.slow
def test_physical_calibration_in_the_report_is_that_of_the_decompressed_sigma(tmp_path):
    """On an asinh-normalized run with sources up to 40σ the first-order σ of the stretch grows by
    cosh(μ/a) ≈ 13 on the brightest pixels; the report's physical σ_z and coverage must be those
    of the σ map the codec writes, pixel for pixel the same tiles (one tile per 32×32 plane)."""
    train, test = write_fields(tmp_path / "train", 12, seed=1), write_fields(tmp_path / "test", 3, seed=2)
    config = {"data": {"paths": [str(train)], "tile": 32, "batch_size": 4, "normalization": "asinh"},
              "model": CONV, "optimizer": {"learning_rate": 3e-3},
              "train": {"steps": 20, "checkpoint_every": 20, "log_every": 20, "image_every": 0, "export": False,
                        "progress": False}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    run_fitsae("train", "--config", tmp_path / "run.yaml", "--run-dir", run)
    run_fitsae("evaluate", "--run-dir", run, "--data", test, "--out", tmp_path / "eval", "--etas", "4",
            "--fpack-tiles", "0", "--no-plots", "--no-tensorboard", "--pca-tiles", "50")
    ae = json.loads((tmp_path / "eval" / "report.json").read_text())["results"][0]["ae"]
    run_fitsae("compress", test, "--run-dir", run, "--eta", 4, "--out", tmp_path / "packed")
    run_fitsae("decompress", tmp_path / "packed", "--sigma", "--out", tmp_path / "unpacked")

    z = []
    for source in sorted(test.glob("*.fits")):
        decoded = next((tmp_path / "unpacked").glob(source.stem + "*"))
        with fits.open(source) as original, fits.open(decoded) as hdul:
            x = original[0].data.astype(np.float64)
            mu, sigma = hdul[0].data.astype(np.float64), hdul["SIGMA"].data.astype(np.float64)
        z.append(((x - mu) / sigma).ravel())
    z = np.concatenate(z)
    assert ae["sigma_z_std_physical"] == pytest.approx(np.std(z), rel=2e-3)
    assert ae["coverage_1sigma_physical"] == pytest.approx(np.mean(np.abs(z) < 1), abs=2e-3)
    assert ae["coverage_2sigma_physical"] == pytest.approx(np.mean(np.abs(z) < 2), abs=2e-3)
