"""The shipped ``train/digits-dense.yaml``, run as a user runs it, beats PCA on held-out digits.

The seed's first claim (a tunable dense AE is a better code than PCA at small η) on the one real
image set bundled offline: scikit-learn's 8×8 digits, written by ``fitsae simulate --kind digits``,
split 1500 for training and 297 held out, trained and scored with the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from eval_helpers import run_fitsae

REPO = Path(__file__).resolve().parents[1]
TRAIN_PLANES = 1500

pytestmark = pytest.mark.slow


def _split_cube(cube: Path, out: Path) -> tuple[Path, Path]:
    """The simulated cube's first ``TRAIN_PLANES`` planes and the rest, as two cubes with its header."""
    with fits.open(cube) as hdul:
        header, data = hdul[0].header.copy(), np.asarray(hdul[0].data)
    paths = []
    for name, planes in (("train", data[:TRAIN_PLANES]), ("test", data[TRAIN_PLANES:])):
        (out / name).mkdir(parents=True)
        hdu = fits.PrimaryHDU(planes, header=header)
        hdu.writeto(out / name / "digits.fits")
        paths.append(out / name)
    return paths[0], paths[1]


def test_the_shipped_digits_config_beats_pca_at_every_small_eta(tmp_path: Path):
    """Plain mask (exactly η units) below PCA at k = η for every η ≤ 4, in physical units."""
    run_fitsae("simulate", "--kind", "digits", "--n", "1797", "--out", str(tmp_path / "sim"), cwd=tmp_path)
    train, test = _split_cube(tmp_path / "sim" / "digits.fits", tmp_path)
    run = tmp_path / "run"
    run_fitsae("train", "--config", str(REPO / "train" / "digits-dense.yaml"), "--run-dir", str(run),
            "--set", f"data.paths=[{train}]",
            "--set", "train.image_every=0", "--set", "train.export=false", cwd=tmp_path)
    run_fitsae("evaluate", "--run-dir", str(run), "--data", str(test), "--out", str(tmp_path / "eval"),
            "--etas", "1-4", "--no-tensorboard", cwd=tmp_path)
    rows = json.loads((tmp_path / "eval" / "report.json").read_text())["results"]
    model = json.loads((tmp_path / "eval" / "report.json").read_text())["headline"]["model"]
    ratios = {r["eta"]: r[model]["rmse_over_noise"] / r["pca"]["rmse_over_noise"] for r in rows}
    assert sorted(ratios) == [1, 2, 3, 4]
    assert all(ratio < 1.0 for ratio in ratios.values()), ratios
