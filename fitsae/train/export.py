"""Export a trained model as a SavedModel that needs only TensorFlow to use.

``RUN/export/`` loads with ``tf.saved_model.load(path)`` in any TensorFlow 2 program, without
fitsae or Keras custom objects, and offers three signatures-fixed functions:

- ``encode(x, eta)``: x float32 (B, H, W, 1) normalized, eta int32 (B,) → masked latents;
- ``decode_mean(z)`` → μ (B, H, W, 1);
- ``decode_var(z)`` → log σ² (B, H, W, 1);

plus ``latent_channels`` and ``stride`` (int variables) and ``params_yaml`` (the run's config, a
string variable) so a user can tell how the data were normalized. Dense models fix H and W; conv
models accept any size divisible by ``stride``.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from fitsae.models import masking

__all__ = ["InferenceModule", "export_model"]


class InferenceModule(tf.Module):
    """The inference half of a tunable autoencoder, with traced input signatures."""

    def __init__(self, model, params_yaml: str = ""):
        super().__init__(name="fitsae_inference")
        self.encoder = model.encoder
        self.mean_decoder = model.mean_decoder
        self.var_decoder = model.var_decoder
        self.latent_channels = tf.Variable(int(model.latent_channels), trainable=False, dtype=tf.int64)
        self.stride = tf.Variable(int(model.stride), trainable=False, dtype=tf.int64)
        self.params_yaml = tf.Variable(params_yaml, trainable=False, dtype=tf.string)
        height, width, channels = model.image_shape
        x_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="x")
        eta_spec = tf.TensorSpec([None], tf.int32, name="eta")
        z_spec = tf.TensorSpec([None, *model.latent_shape(height, width)], tf.float32, name="z")
        self.encode = tf.function(self._encode, input_signature=[x_spec, eta_spec])
        self.decode_mean = tf.function(self._decode_mean, input_signature=[z_spec])
        self.decode_var = tf.function(self._decode_var, input_signature=[z_spec])

    def _encode(self, x, eta):
        return masking.apply_mask(self.encoder(x, training=False), eta)

    def _decode_mean(self, z):
        return self.mean_decoder(z, training=False)

    def _decode_var(self, z):
        return self.var_decoder(z, training=False)


def export_model(model, path, params_yaml: str = "") -> Path:
    """Write ``model`` as a SavedModel at ``path`` (replacing an older export there)."""
    path = Path(path)
    if hasattr(model, "inference_module"):  # β-VAE: encode/decode also take log β
        module = model.inference_module(params_yaml)
        tf.saved_model.save(module, str(path), signatures=module.signatures())
        return path
    module = InferenceModule(model, params_yaml)
    tf.saved_model.save(
        module, str(path),
        signatures={
            "encode": module.encode.get_concrete_function(),
            "decode_mean": module.decode_mean.get_concrete_function(),
            "decode_var": module.decode_var.get_concrete_function(),
        },
    )
    return path
