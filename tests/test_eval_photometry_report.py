"""Issue 14, item 4: the report's aperture-flux error is that of the image `fitsae decompress` writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from astropy.io import fits

from eval_helpers import CONV, run_fitsae, write_fields
from fitsae.evaluate.photometry import detect_sources, flux_errors


@pytest.mark.slow
def test_the_reports_flux_error_is_that_of_the_decompressed_image(tmp_path):
    """Sources found on each original at its noise σ, measured again on the codec's decoded μ:
    the median |ΔF|/F over all tiles' SNR ≥ 20 sources equals the report's codec figure."""
    train, test = write_fields(tmp_path / "train", 12, seed=1), write_fields(tmp_path / "test", 12, seed=2)
    config = {"data": {"paths": [str(train)], "tile": 32, "batch_size": 4},
              "model": CONV, "optimizer": {"learning_rate": 3e-3},
              "train": {"steps": 20, "checkpoint_every": 20, "log_every": 20, "image_every": 0, "export": False,
                        "progress": False}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    run_fitsae("train", "--config", tmp_path / "run.yaml", "--run-dir", run)
    run_fitsae("evaluate", "--run-dir", run, "--data", test, "--out", tmp_path / "eval", "--etas", "4",
            "--fpack-tiles", "0", "--no-plots", "--no-tensorboard", "--pca-tiles", "50")
    row = json.loads((tmp_path / "eval" / "report.json").read_text())["results"][0]
    run_fitsae("compress", test, "--run-dir", run, "--eta", 4, "--out", tmp_path / "packed")
    run_fitsae("decompress", tmp_path / "packed", "--out", tmp_path / "unpacked")

    noise = {json.loads(line)["path"]: json.loads(line)["noise"]
             for line in (tmp_path / "eval" / "test.manifest.jsonl").read_text().splitlines()}
    relative, n_sources = [], 0
    for source in sorted(test.glob("*.fits")):
        decoded = next((tmp_path / "unpacked").glob(source.stem + "*"))
        original, mu = fits.getdata(source).astype(np.float64), fits.getdata(decoded).astype(np.float64)
        found = detect_sources(original, noise[str(source)])
        errors = flux_errors(found, mu, snr_min=20.0)
        relative.append(errors.relative_errors)
        n_sources += errors.n_sources
    relative = np.concatenate(relative)
    codec = row["ae"]["photometry"]
    assert (codec["n_sources"], codec["n_used"]) == (n_sources, len(relative)) and len(relative) >= 4
    assert codec["median_abs_relative_flux_error"] == pytest.approx(np.median(np.abs(relative)), rel=0.05)
    assert codec["mean_relative_flux_error"] == pytest.approx(np.mean(relative), rel=1e-6)
