"""Decoder up-sampling: resize + conv leaves no grid at the stride period; old runs still restore."""

import numpy as np
import pytest
import tensorflow as tf
import yaml

from fitsae import config as fconfig
from fitsae.models import build_model
from fitsae.models.config import ModelConfig
from fitsae.train import checkpoints
from fitsae.train.config import ExperimentConfig


def phase_spread(image, period, margin):
    """Std over the period×period phases of the interior's phase means, relative to its mean."""
    inner = image[margin:-margin, margin:-margin]
    means = [inner[i::period, j::period].mean() for i in range(period) for j in range(period)]
    return float(np.std(means) / abs(np.mean(means)))


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_only_transposed_convolutions_print_the_stride_grid_on_a_constant_latent(upsample):
    tf.keras.utils.set_random_seed(3)
    cfg = ModelConfig(kind="conv", latent_channels=4, filters=[8, 8], blocks_per_stage=1, upsample=upsample)
    model = build_model(cfg, (None, None, 1))
    z = tf.ones([1, 16, 16, 4])  # every position alike: any structure in the output is the decoder's
    for decoded in (model.decode_mean(z), model.decode_var(z)):
        # 16 px from the edges the zero padding of the 'same' convolutions no longer reaches.
        spread = phase_spread(decoded.numpy()[0, ..., 0], model.stride, margin=16)
        if upsample == "transpose":
            assert spread > 1e-2
        else:
            assert spread < 1e-5


def test_a_run_saved_before_the_upsample_key_restores_its_transposed_decoder(tmp_path):
    cfg = fconfig.from_dict(ExperimentConfig, {"model": {"kind": "conv", "latent_channels": 4, "filters": [8, 8]}})
    saved = fconfig.to_dict(cfg)
    del saved["model"]["upsample"]  # what params.yaml held before the key existed
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(saved))
    old = build_model(ModelConfig(kind="conv", latent_channels=4, filters=[8, 8], upsample="transpose"), (None, None, 1))
    z = tf.random.stateless_normal([1, 4, 4, 4], seed=[1, 2])
    expected = old.decode_mean(z).numpy()
    tf.train.Checkpoint(model=old, step=tf.Variable(7, dtype=tf.int64)).write(
        str(checkpoints.checkpoint_dir(tmp_path) / "ckpt-7"))
    _, restored, step = checkpoints.load_model(tmp_path)
    assert step == 7
    np.testing.assert_array_equal(restored.decode_mean(z).numpy(), expected)
