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
def test_the_reports_flux_errors_are_those_of_the_decompressed_image_against_original_and_truth(tmp_path):
    """Sources found on each original at its noise σ, measured again on the codec's decoded μ:
    the median |ΔF|/F over all tiles' SNR ≥ 20 sources equals the report's codec figure, against
    the original's fluxes and against the truth's; the floor is the truth's own, and the
    original's against the truth is the original's."""
    train, test = write_fields(tmp_path / "train", 12, seed=1), write_fields(tmp_path / "test", 12, seed=2, truth=True)
    config = {"data": {"paths": [str(train)], "tile": 32, "batch_size": 4},
              "model": CONV, "optimizer": {"learning_rate": 3e-3},
              "train": {"steps": 20, "checkpoint_every": 20, "log_every": 20, "image_every": 0, "export": False,
                        "progress": False}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    run_fitsae("train", "--config", tmp_path / "run.yaml", "--run-dir", run)
    run_fitsae("evaluate", "--run-dir", run, "--data", test, "--out", tmp_path / "eval", "--etas", "4",
            "--fpack-tiles", "0", "--no-plots", "--no-tensorboard", "--pca-tiles", "50")
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    row = report["results"][0]
    run_fitsae("compress", test, "--run-dir", run, "--eta", 4, "--out", tmp_path / "packed")
    run_fitsae("decompress", tmp_path / "packed", "--out", tmp_path / "unpacked")

    noise = {json.loads(line)["path"]: json.loads(line)["noise"]
             for line in (tmp_path / "eval" / "test.manifest.jsonl").read_text().splitlines()}
    relative = {"photometry": [], "photometry_truth": [], "floor": [], "original_vs_truth": []}
    n_sources = 0
    for source in sorted(test.glob("*.fits")):
        decoded = next((tmp_path / "unpacked").glob(source.stem + "*"))
        original, mu = fits.getdata(source).astype(np.float64), fits.getdata(decoded).astype(np.float64)
        truth = fits.getdata(source, "TRUTH").astype(np.float64)
        found = detect_sources(original, noise[str(source)])
        errors = flux_errors(found, mu, snr_min=20.0)
        relative["photometry"].append(errors.relative_errors)
        relative["photometry_truth"].append(flux_errors(found, mu, truth, snr_min=20.0).relative_errors)
        relative["floor"].append(flux_errors(found, truth, snr_min=20.0).relative_errors)
        relative["original_vs_truth"].append(flux_errors(found, original, truth, snr_min=20.0).relative_errors)
        n_sources += errors.n_sources
    relative = {key: np.concatenate(parts) for key, parts in relative.items()}
    reported = {**{key: row["ae"][key] for key in ("photometry", "photometry_truth")},
                "floor": report["photometry_reference"]["truth_vs_original"],
                "original_vs_truth": report["photometry_reference"]["original_vs_truth"]}
    assert len(relative["photometry"]) >= 4
    for key, errors in relative.items():
        figure = reported[key]
        assert (figure["n_sources"], figure["n_used"]) == (n_sources, len(errors)), key
        assert figure["median_abs_relative_flux_error"] == pytest.approx(np.median(np.abs(errors)), rel=0.05), key
        assert figure["mean_relative_flux_error"] == pytest.approx(np.mean(errors), rel=1e-6), key
