"""The training loop in one process: resume, divergence, config checks, schedules, summaries."""

import numpy as np
import pytest
import tensorflow as tf
import yaml

from fitsae.config import ConfigError
from fitsae.train.checkpoints import CheckpointError, list_checkpoints, load_model
from fitsae.train.config import OptimizerConfig
from fitsae.train.loop import WarmupDecay, build_optimizers, train
from fitsae.train.memory import ArrayData
from fitsae.train.signals import EXIT_DIVERGED
from train_helpers import blobs, model_weights, read_events, tiny_config


@pytest.fixture(scope="module")
def images():
    return blobs(64, 16)


def test_training_writes_checkpoints_summaries_and_a_loadable_model(tmp_path, images):
    cfg = tiny_config(train={"steps": 20, "export": False})
    result = train(cfg, tmp_path / "run", data=ArrayData(images, 8))
    assert result.exit_code == 0 and result.step == 20
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [10, 20]
    events = read_events(tmp_path / "run")
    for tag in ("mse", "nll", "eta", "lr/primary", "lr/variance", "perf/images_per_sec"):
        assert [p for _, p, _ in events[tag]] == ["scalars"] * 4, tag
    assert any(tag.startswith("mse_eta/") for tag in events)
    assert events["config"][0][1] == "text"
    image_tags = [t for t, rows in events.items() if rows[0][1] == "images"]
    assert sorted(image_tags) == ["images/eta_001", "images/eta_002", "images/eta_004"]
    # One panel per example: input | mu | sigma | residual, side by side.
    panel = tf.io.decode_png(events["images/eta_001"][0][2][2]).numpy()
    assert panel.shape[0] == 16 and panel.shape[1] == 4 * 16 + 3

    cfg_back, model, step = load_model(tmp_path / "run")
    assert step == 20 and cfg_back == cfg
    # The optimizer trained the saved model: at η = C it halves the error of predicting 0 (measured
    # 0.51 of it after these 20 steps; an untrained model gives about 1).
    x = tf.constant(images[..., None])
    mu = model.decode_mean(model.encode(x, tf.fill([len(images)], model.latent_channels))).numpy()
    assert np.mean((images[..., None] - mu) ** 2) < 0.7 * np.mean(images ** 2)
    sessions = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())["sessions"]
    assert sessions[-1]["end_step"] == 20 and sessions[-1]["exit_code"] == 0


def test_resumed_run_equals_uninterrupted_run(tmp_path, images):
    straight = train(tiny_config(train={"steps": 12, "export": False, "image_every": 0}), tmp_path / "a",
                     data=ArrayData(images, 8))
    first = train(tiny_config(train={"steps": 7, "export": False, "image_every": 0}), tmp_path / "b",
                  data=ArrayData(images, 8))
    second = train(tiny_config(train={"steps": 12, "export": False, "image_every": 0}), tmp_path / "b",
                   data=ArrayData(images, 8))
    assert (straight.step, first.step, second.step) == (12, 7, 12)
    _, a, _ = load_model(tmp_path / "a")
    _, b, _ = load_model(tmp_path / "b")
    for wa, wb in zip(model_weights(a), model_weights(b), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
    # The optimizers were restored too, not just the weights: their step counters continued.
    reader = tf.train.load_checkpoint(str(list_checkpoints(tmp_path / "b")[-1][1]))
    assert reader.get_tensor("optimizer_primary/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 12


def test_non_finite_loss_stops_without_saving_it(tmp_path, images):
    cfg = tiny_config(optimizer={"name": "sgd", "learning_rate": 1e4, "momentum": 0.0},
                      train={"steps": 200, "checkpoint_every": 1, "image_every": 0})
    result = train(cfg, tmp_path / "run", data=ArrayData(images, 8))
    assert result.exit_code == EXIT_DIVERGED and "non-finite" in result.reason
    assert result.step < 200
    saved = list_checkpoints(tmp_path / "run")
    assert all(step < result.step for step, _ in saved)
    for step, _ in saved:
        _, model, _ = load_model(tmp_path / "run", step)
        assert all(np.isfinite(w).all() for w in model_weights(model))
    assert not (tmp_path / "run" / "export").exists()


def test_resuming_a_different_model_is_refused(tmp_path, images):
    train(tiny_config(train={"steps": 2, "export": False, "image_every": 0}), tmp_path / "run",
          data=ArrayData(images, 8))
    with pytest.raises(ConfigError, match="model.latent_channels"):
        train(tiny_config(model={"latent_channels": 2}, train={"steps": 4}), tmp_path / "run",
              data=ArrayData(images, 8))


def test_load_model_errors_name_the_problem(tmp_path, images):
    with pytest.raises(CheckpointError, match="no params.yaml"):
        load_model(tmp_path / "nothing")
    train(tiny_config(train={"steps": 4, "checkpoint_every": 2, "export": False, "image_every": 0}),
          tmp_path / "run", data=ArrayData(images, 8))
    with pytest.raises(CheckpointError, match="available steps: 2, 4"):
        load_model(tmp_path / "run", 3)
    data_file = next((tmp_path / "run" / "checkpoints").glob("ckpt-4.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="ckpt-4"):
        load_model(tmp_path / "run")
    _, _, step = load_model(tmp_path / "run", 2)
    assert step == 2


def test_learning_rate_schedules_and_world_size_scaling():
    warm = WarmupDecay(1.0, warmup_steps=10, schedule="cosine", decay_steps=100, final_fraction=0.1)
    assert float(warm(0)) == pytest.approx(0.1)
    assert float(warm(9)) == pytest.approx(1.0)
    assert float(warm(60)) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.5)))
    assert float(warm(500)) == pytest.approx(0.1)
    expo = WarmupDecay(2.0, 0, "exponential", 10, 0.5)
    assert float(expo(20)) == pytest.approx(0.5)
    cfg = OptimizerConfig(learning_rate=0.01, variance_learning_rate=0.002, scale_with_world_size="linear")
    opt1, opt2 = build_optimizers(cfg, total_steps=100, world_size=4)
    assert float(opt1.learning_rate) == pytest.approx(0.04)
    assert float(opt2.learning_rate) == pytest.approx(0.008)
    opt1, _ = build_optimizers(OptimizerConfig(learning_rate=0.01, scale_with_world_size="sqrt"), 100, 4)
    assert float(opt1.learning_rate) == pytest.approx(0.02)
