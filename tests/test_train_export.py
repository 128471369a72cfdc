"""The exported inference model: save -> load gives identical outputs, without fitsae."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from fitsae.models import build_model
from fitsae.models.config import ModelConfig
from fitsae.train.export import export_model


@pytest.mark.parametrize("kind, shape", [("conv", (None, None, 1)), ("dense", (8, 8, 1))])
def test_export_round_trip_gives_identical_outputs(tmp_path, kind, shape):
    cfg = ModelConfig(kind=kind, latent_channels=5, filters=[4, 8], hidden=[12])
    model = build_model(cfg, shape)
    x = tf.random.stateless_normal([3, 8, 8, 1], seed=[4, 2])
    eta = tf.constant([1, 3, 5], tf.int32)
    before = model.inference_module()
    export_model(model, tmp_path / "export", params_yaml="model: {kind: %s}\n" % kind)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    z = loaded.encode(x, eta)
    np.testing.assert_array_equal(z.numpy(), before.encode(x, eta).numpy())
    np.testing.assert_array_equal(loaded.decode_mean(z).numpy(), before.decode_mean(z).numpy())
    np.testing.assert_array_equal(loaded.decode_var(z).numpy(), before.decode_var(z).numpy())
    # And the export is the trained model, not a copy of something else.
    np.testing.assert_allclose(loaded.decode_mean(z).numpy(), model.decode_mean(model.encode(x, eta)).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert int(loaded.latent_channels) == 5 and int(loaded.stride) == cfg.total_stride
    assert loaded.params_yaml.numpy().decode().startswith("model:")
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "mu.npy", loaded.decode_mean(z).numpy())

    # A fresh interpreter that cannot import fitsae (or any custom Keras object) still runs it.
    script = f"""
import sys
sys.modules["fitsae"] = None
import numpy as np, tensorflow as tf
m = tf.saved_model.load({str(tmp_path / 'export')!r})
x = np.load({str(tmp_path / 'x.npy')!r})
mu = m.decode_mean(m.encode(tf.constant(x), tf.constant([1, 3, 5], tf.int32))).numpy()
sys.exit(0 if np.array_equal(mu, np.load({str(tmp_path / 'mu.npy')!r})) else 3)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    signatures = set(loaded.signatures)
    assert {"encode", "decode_mean", "decode_var"} <= signatures
