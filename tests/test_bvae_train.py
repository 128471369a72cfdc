"""``kind: bvae`` through the generic training loop: TensorBoard extras, exact resume, export, load."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from bvae_helpers import toy_images
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fitsae import config as fconfig
from fitsae.models.bvae import BetaVAE
from fitsae.train.checkpoints import load_model
from fitsae.train.config import ExperimentConfig
from fitsae.train.loop import train
from fitsae.train.memory import ArrayData

REPO = Path(__file__).resolve().parents[1]
IMAGES = toy_images(256, 8, seed=5)


def experiment(steps: int, **train_overrides) -> ExperimentConfig:
    raw = {
        "data": {"tile": 8, "batch_size": 16},
        "model": {"kind": "bvae", "latent_channels": 3, "hidden": [16],
                  "bvae": {"architecture": "dense", "logbeta_range": [-2.0, 1.0], "kl_warmup_steps": 5}},
        "optimizer": {"learning_rate": 2e-3},
        "train": {"steps": steps, "seed": 3, "log_every": 5, "image_every": 10, "checkpoint_every": 10,
                  "progress": False, **train_overrides},
    }
    return fconfig.from_dict(ExperimentConfig, raw)


def data():
    return ArrayData(IMAGES, batch_size=16, seed=3)


def test_bvae_trains_in_the_generic_loop_with_kl_summaries(tmp_path):
    run = tmp_path / "run"
    result = train(experiment(20), run, data=data())
    assert result.exit_code == 0 and result.step == 20
    for key in ("kl", "rate", "logbeta", "active_units", "kl_dim_00", "kl_dim_02", "mse", "nll"):
        assert key in result.metrics, key
    assert 0 <= result.metrics["active_units"] <= 3

    events = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0, "images": 0}).Reload()
    tags = set(events.Tags()["tensors"]) | set(events.Tags().get("images", []))
    for tag in ("kl_dim_00", "kl_dim_01", "kl_dim_02", "active_units", "kl", "rate", "images/logbeta_-2.00",
                "images/logbeta_+1.00"):
        assert tag in tags, (tag, sorted(tags))

    cfg, model, step = load_model(run)
    assert isinstance(model, BetaVAE) and step == 20 and cfg.model.bvae.kl_warmup_steps == 5
    loaded = tf.saved_model.load(str(run / "export"))
    x = tf.constant(IMAGES[:4])
    lb = tf.constant([-2.0, -1.0, 0.0, 1.0])
    np.testing.assert_allclose(loaded.encode(x, lb), model.encode(x, lb), rtol=1e-5, atol=1e-6)


def test_resumed_bvae_run_matches_an_uninterrupted_one(tmp_path):
    """log β and ε come from (seed, rank, step): stopping at 10 and resuming must change nothing."""
    whole = train(experiment(20, export=False, image_every=0), tmp_path / "whole", data=data())
    first = train(experiment(10, export=False, image_every=0), tmp_path / "split", data=data())
    assert first.step == 10
    second = train(experiment(20, export=False, image_every=0), tmp_path / "split", data=data())
    assert whole.step == second.step == 20
    _, a, _ = load_model(tmp_path / "whole")
    _, b, _ = load_model(tmp_path / "split")
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)


def test_shipped_bvae_config_is_valid():
    raw = yaml.safe_load((REPO / "train" / "bvae.yaml").read_text())
    cfg = fconfig.from_dict(ExperimentConfig, raw)
    assert cfg.model.kind == "bvae"
    a, b = cfg.model.bvae.logbeta_range
    assert a < 0 < b  # the ELBO (β = 1) lies inside the trained range
    side = cfg.data.crop or cfg.data.tile
    assert side % BetaVAE(cfg.model, (side, side, 1)).stride == 0


@pytest.mark.parametrize("bad, match", [
    ({"logbeta_range": [1.0, -1.0]}, "logbeta_range"),
    ({"beta_ref": 0.0}, "beta_ref"),
    ({"free_bits": -1.0}, "free_bits"),
    ({"betaa": 1.0}, "betaa"),
])
def test_bad_bvae_config_is_a_clear_error(bad, match):
    raw = {"model": {"kind": "bvae", "bvae": bad}}
    with pytest.raises(fconfig.ConfigError, match=match):
        fconfig.from_dict(ExperimentConfig, raw)
