"""``fitsae compress`` / ``decompress``: FITS latent containers that decode to the model's μ and σ."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from eval_helpers import ASTROPY_DATA, CONV, DENSE, shared_run, write_fields
from fitsae.cli import main


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv", CONV)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """A linear dense run on 8×8 tiles (C = 6), 10 steps."""
    return shared_run(tmp_path_factory, "dense", DENSE, tile=8, steps=10, checkpoint_every=10)


def _odd_image(path: Path) -> Path:
    """A 30×27 field (not a multiple of the stride or tile) with two NaN pixels."""
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:30, :27]
    img = 100 + 2 * rng.normal(size=(30, 27)) + 60 * np.exp(-((yy - 12) ** 2 + (xx - 9) ** 2) / 8.0)
    img[3, 4] = img[20, 20] = np.nan
    fits.PrimaryHDU(img.astype(np.float32)).writeto(path)
    return path


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _direct_decode(run_dir: Path, container: Path):
    """μ (normalized) computed straight from the model, as a check of the codec's bookkeeping."""
    import tensorflow as tf

    from fitsae.train.checkpoints import load_model

    _, model, _ = load_model(run_dir)
    with fits.open(container) as hdul:
        z = np.asarray(hdul["LATENT", 1].data).transpose(1, 2, 0)
        eta = hdul["LATENT", 1].header["ETA"]
    full = np.zeros(z.shape[:-1] + (model.latent_channels,), np.float32)
    full[..., :eta] = z
    if model.model_config.kind == "dense":
        mu = model.decode_mean(tf.constant(full.reshape(-1, model.latent_channels)))
        return np.asarray(mu)[..., 0], z.shape[:2]
    return np.asarray(model.decode_mean(tf.constant(full[None])))[0, ..., 0], None


@pytest.mark.parametrize("which", ["conv", "dense"])
def test_round_trip_matches_the_model_at_eta(which, conv_run, dense_run, tmp_path, capsys):
    run = (conv_run if which == "conv" else dense_run)["run"]
    source = _odd_image(tmp_path / "odd.fits")
    container = tmp_path / "odd.fae.fits"
    code, out, err = _cli(["compress", "--run-dir", str(run), "--eta", "2", "--fixed-eta", str(source),
                           "--out", str(container)], capsys)
    assert code == 0, err
    with fits.open(container) as hdul:
        head, latent = hdul[0].header, hdul["LATENT", 1]
        assert head["FAEFMT"] == "fitsae-latent-1" and head["ETA"] == 2 and head["CKPTSTEP"] > 0
        assert head["ETASEL"] == "fixed" and latent.header["ETA"] == 2
        assert len(head["WDIGEST"]) == 64 and Path(head["RUNDIR"]) == run.resolve()
        # conv: stride 4 → ceil(30/4)×ceil(27/4) latent positions; dense: one vector per 8×8 tile
        grid = (8, 7) if which == "conv" else (4, 4)
        assert latent.data.shape == (2, *grid)
        assert latent.header["ORIGH"] == 30 and latent.header["ORIGW"] == 27 and latent.header["NFILLED"] == 2
        assert latent.header["BITSPP"] == pytest.approx(32 * 2 * grid[0] * grid[1] / (30 * 27))
        offset, scale = latent.header["OFFSET"], latent.header["SCALE"]
    assert "bits/pixel" in out

    decoded = tmp_path / "odd.decoded.fits"
    code, out, err = _cli(["decompress", str(container), "--out", str(decoded)], capsys)
    assert code == 0, err
    with fits.open(decoded) as hdul:
        mu, sigma = hdul["MU", 1].data, hdul["SIGMA", 1].data
        assert hdul["MU", 1].header["SRCFILE"] == str(source)
    assert mu.shape == sigma.shape == (30, 27)
    assert np.all(np.isfinite(mu)) and np.all(sigma > 0)

    mu_norm, grid = _direct_decode(run, container)
    if grid is not None:  # dense: reassemble the 8×8 tiles
        ny, nx = grid
        mu_norm = mu_norm.reshape(ny, nx, 8, 8).transpose(0, 2, 1, 3).reshape(ny * 8, nx * 8)
    expected = mu_norm[:30, :27] * scale + offset  # robust normalization: physical = x·scale + offset
    np.testing.assert_allclose(mu, expected, rtol=1e-5, atol=1e-4 * scale)


def _decoded_error(run: Path, source: Path, eta: int, select: str, tmp_path: Path) -> tuple[int, float]:
    """Channels kept and the decoded μ's squared error on the measured pixels, via the library."""
    from fitsae.codec import compress_files, decompress_file

    container = tmp_path / f"{select}{eta}.fae.fits"
    (summary,) = compress_files(run, [str(source)], eta, container, select=select)
    decompress_file(container, tmp_path / f"{select}{eta}.decoded.fits")
    with fits.open(source) as src, fits.open(tmp_path / f"{select}{eta}.decoded.fits") as dec:
        x, mu = np.asarray(src[0].data, np.float64), np.asarray(dec["MU", 1].data, np.float64)
        assert dec["MU", 1].header["ETA"] == summary["eta_kept"][0]
    measured = np.isfinite(x)
    return summary["eta_kept"][0], float(np.sum((x[measured] - mu[measured]) ** 2))


@pytest.mark.parametrize("which", ["conv", "dense"])
def test_budget_keeps_the_channels_that_decode_best(which, conv_run, dense_run, tmp_path):
    """At budget η a plane keeps the η′ ≤ η whose decoded μ is closest to the image: its error is
    the smallest fixed-η′ error, so it never grows with the budget."""
    run = (conv_run if which == "conv" else dense_run)["run"]
    source = _odd_image(tmp_path / "odd.fits")
    channels = CONV["latent_channels"] if which == "conv" else DENSE["latent_channels"]
    fixed = [_decoded_error(run, source, eta, "fixed", tmp_path) for eta in range(1, channels + 1)]
    assert [kept for kept, _ in fixed] == list(range(1, channels + 1))
    fixed_errors = [e for _, e in fixed]
    previous = np.inf
    for eta in range(1, channels + 1):
        kept, error = _decoded_error(run, source, eta, "best", tmp_path)
        # float32 μ round-trips through FITS: equal to the best fixed error up to that precision
        assert error == pytest.approx(min(fixed_errors[:eta]), rel=1e-5)
        assert kept == 1 + int(np.argmin(fixed_errors[:eta]))
        assert error <= previous * (1 + 1e-5)
        previous = error


def test_real_compressed_sky_image_round_trips(conv_run, tmp_path, capsys):
    source = ASTROPY_DATA / "hdu" / "compressed" / "tests" / "data" / "m13_rice.fits"
    out_dir = tmp_path / "c"
    code, out, err = _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "1", str(source),
                           "--out", str(out_dir)], capsys)
    assert code == 0, err
    container = out_dir / "m13_rice.fae.fits"
    with fits.open(container) as hdul:
        assert hdul["LATENT", 1].data.shape == (1, 75, 75)
        assert hdul["LATENT", 1].header["SRCHDU"] == 1  # the CompImageHDU after the empty primary
    code, out, err = _cli(["decompress", str(container), "--out", str(tmp_path / "d")], capsys)
    assert code == 0, err
    with fits.open(tmp_path / "d" / "m13_rice.decoded.fits") as hdul:
        assert hdul["MU", 1].data.shape == (300, 300) and np.all(np.isfinite(hdul["SIGMA", 1].data))


def test_decoding_with_another_model_is_refused(conv_run, tmp_path, capsys):
    source = _odd_image(tmp_path / "odd.fits")
    container = tmp_path / "odd.fae.fits"
    assert _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "3", str(source), "--out",
                 str(container)], capsys)[0] == 0
    code, _, err = _cli(["decompress", str(container), "--out", str(tmp_path / "x.fits"), "--checkpoint", "10"],
                        capsys)
    assert code == 2 and "weight digest" in err and "same run and checkpoint" in err
    assert not (tmp_path / "x.fits").exists()


def test_bad_inputs_are_clear_errors(conv_run, tmp_path, capsys):
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(plain)
    code, _, err = _cli(["decompress", str(plain), "--out", str(tmp_path / "o.fits")], capsys)
    assert code == 2 and "not a fitsae latent container" in err
    code, _, err = _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "9", str(plain),
                         "--out", str(tmp_path / "c.fits")], capsys)
    assert code == 2 and "must be in 1..4" in err
    code, _, err = _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "1", str(tmp_path / "none"),
                         "--out", str(tmp_path / "c.fits")], capsys)
    assert code == 2 and "nothing to compress" in err


def test_compress_and_evaluate_choose_the_same_channels_for_one_tile_planes(conv_run, tmp_path, capsys):
    """Evaluation scores the budget per tile, the codec chooses per plane: on planes that are one
    tile each, both must keep the same η′ (the demo's held-out fields are such planes)."""
    fields = write_fields(tmp_path / "fields", 8, seed=5, size=16)
    code, _, err = _cli(["evaluate", "--run-dir", str(conv_run["run"]), "--data", str(fields), "--out",
                         str(tmp_path / "eval"), "--fpack-tiles", "0", "--no-plots", "--no-tensorboard"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["data"]["n_tiles"] == 8
    for row in report["results"]:
        out = tmp_path / f"c{row['eta']}"
        code, stdout, err = _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", str(row["eta"]),
                                  str(fields), "--out", str(out)], capsys)
        assert code == 0, err
        kept = Counter()
        for container in out.glob("*.fae.fits"):
            with fits.open(container) as hdul:
                kept[str(hdul["LATENT", 1].header["ETA"])] += 1
        assert dict(kept) == row["ae"]["tiles_by_eta_kept"], row["eta"]


def test_containers_written_before_budgets_still_decode(conv_run, tmp_path, capsys):
    """A container without the per-plane ETA (fitsae before budgets) kept exactly the primary ETA."""
    source = _odd_image(tmp_path / "odd.fits")
    container = tmp_path / "odd.fae.fits"
    assert _cli(["compress", "--run-dir", str(conv_run["run"]), "--eta", "3", "--fixed-eta", str(source),
                 "--out", str(container)], capsys)[0] == 0
    with fits.open(container, mode="update") as hdul:
        del hdul[0].header["ETASEL"]
        del hdul["LATENT", 1].header["ETA"]
    code, _, err = _cli(["decompress", str(container), "--out", str(tmp_path / "old.fits")], capsys)
    assert code == 0, err
    with fits.open(tmp_path / "old.fits") as hdul:
        assert hdul["MU", 1].header["ETA"] == 3 and hdul["MU", 1].data.shape == (30, 27)
    with fits.open(container, mode="update") as hdul:
        hdul[0].header["ETA"] = 2  # latents of 3 channels under a budget of 2: refused, not misread
    code, _, err = _cli(["decompress", str(container), "--out", str(tmp_path / "bad.fits")], capsys)
    assert code == 2 and "does not match its ETA=2" in err
