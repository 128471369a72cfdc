"""Encoder-side refinement (``compress --refine``): integers that score the model's own objective
lower than the encoder's, written in files any decoder reads, and scored by evaluate as written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from astropy.io import fits

from eval_helpers import CONV, CONV_RATE, shared_run, write_fields
from fitsae.cli import main
from test_codec_files import _direct_mu, _odd_image, kept_and_payload


@pytest.fixture(scope="module")
def rate_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv_rate", CONV_RATE, steps=40, checkpoint_every=20)


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv", CONV)


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _tile_and_latents(run, eta=2):
    """The run's model, a 32×32 tile with a star on noise, and its encoder latents (…, η)."""
    import tensorflow as tf

    from fitsae.codec.load import load_checkpoint

    _, model, _ = load_checkpoint(run)
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:32, :32]
    x = (rng.normal(size=(32, 32)) + 30.0 * np.exp(-((yy - 11) ** 2 + (xx - 20) ** 2) / 6.0)).astype(np.float32)
    z = np.asarray(model.encode(tf.constant(x[None, ..., None]), tf.constant([model.latent_channels])), np.float32)
    return model, x, z[0, ..., :eta]


def test_refined_integers_score_the_objective_reported_and_below_the_encoders_own(rate_run):
    import tensorflow as tf

    from fitsae.codec.refine import Refiner

    model, x, z = _tile_and_latents(rate_run["run"])
    tile = tf.constant(x[None, ..., None])
    k, before, after = Refiner(model, steps=30).symbols(x, z)

    def objective(integers):
        return float(model.coding_loss(tile, tf.constant(integers[None], tf.float32)))

    assert before == pytest.approx(objective(np.rint(z)), rel=1e-5)
    assert after == pytest.approx(objective(k.astype(np.float32)), rel=1e-5)
    assert after < before


def test_a_step_far_too_large_ends_no_higher_than_the_default_step(rate_run):
    # Halving on a stall brings a 3000× step down to the scale that pays, and past it.
    from fitsae.codec.refine import LEARNING_RATE, Refiner

    model, x, z = _tile_and_latents(rate_run["run"])
    _, _, default = Refiner(model, steps=150).symbols(x, z)
    _, _, huge = Refiner(model, steps=150, learning_rate=3000 * LEARNING_RATE).symbols(x, z)
    assert huge <= default


def test_a_refined_file_decodes_to_its_integers_and_differs_from_the_unrefined_one(rate_run, tmp_path, capsys):
    source = _odd_image(tmp_path / "odd.fits")
    payloads = {}
    for steps in (0, 30):
        container = tmp_path / f"r{steps}.fae.fits"
        code, _, err = _cli(["compress", "--run-dir", str(rate_run["run"]), "--eta", "2", "--fixed-eta",
                             "--refine", str(steps), str(source), "--out", str(container)], capsys)
        assert code == 0, err
        with fits.open(container) as hdul:
            assert hdul[0].header["REFINE"] == steps
            payloads[steps] = bytes(hdul["TILES", 1].data[0]["DATA"])
        decoded = tmp_path / f"r{steps}.decoded.fits"
        code, _, err = _cli(["decompress", str(container), "--out", str(decoded)], capsys)
        assert code == 0, err
        with fits.open(decoded) as hdul:
            mu = hdul[0].data
        measured = ~np.isnan(mu)
        np.testing.assert_allclose(mu[measured], _direct_mu(rate_run["run"], container)[measured], rtol=1e-6)
    assert payloads[30] != payloads[0]


def test_compress_and_evaluate_refine_to_the_same_channels_and_bytes(rate_run, tmp_path, capsys):
    """Evaluation scores what ``compress --refine`` writes: same η′ per tile, same coded bytes."""
    fields = write_fields(tmp_path / "fields", 6, seed=5, size=16)
    code, _, err = _cli(["evaluate", "--run-dir", str(rate_run["run"]), "--data", str(fields), "--out",
                         str(tmp_path / "eval"), "--etas", "1,4", "--refine", "10", "--fpack-tiles", "0",
                         "--no-plots", "--no-tensorboard"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["model"]["refine_steps"] == 10
    for row in report["results"]:
        out = tmp_path / f"c{row['eta']}"
        code, _, err = _cli(["compress", "--run-dir", str(rate_run["run"]), "--eta", str(row["eta"]),
                             "--refine", "10", str(fields), "--out", str(out)], capsys)
        assert code == 0, err
        kept, payload = kept_and_payload(out)
        assert kept == row["ae"]["tiles_by_eta_kept"], row["eta"]
        assert 8.0 * payload / (6 * 16 * 16) == pytest.approx(row["ae"]["bits_per_pixel_coded"], rel=1e-12)


def test_refining_a_model_without_a_prior_is_a_one_line_error_before_freezing(conv_run, tmp_path, capsys):
    source = _odd_image(tmp_path / "odd.fits")
    run = tmp_path / "run"  # never frozen: freezing it would fit tables first (minutes on a real run)
    shutil.copytree(conv_run["run"], run, ignore=shutil.ignore_patterns("models"))
    code, _, err = _cli(["compress", "--run-dir", str(run), "--eta", "2", "--refine", "5",
                         str(source), "--out", str(tmp_path / "o.fae.fits")], capsys)
    assert code == 2
    (line,) = [line for line in err.splitlines() if line.startswith("fitsae compress:")]
    assert "trained for rate" in line
    assert not (tmp_path / "o.fae.fits").exists()
    assert not (run / "models").exists()
