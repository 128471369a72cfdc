"""The part every model's SavedModel inference module shares.

Each model (tunable AE, β-VAE) exports a ``tf.Module`` whose ``encode``/``decode_mean``/
``decode_var`` carry fixed input signatures, so the export reloads with plain
``tf.saved_model.load``. What differs is those signatures; what is shared lives here: the tracked
sub-models and the metadata variables that travel with the weights.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["InferenceModule"]


class InferenceModule(tf.Module):
    """Tracks a model's encoder and both decoders plus ``latent_channels``, ``stride``, ``params_yaml``.

    It tracks the sub-models (their variables), not the Keras model itself: a called Keras model
    brings its own one-input serving signature, which cannot trace a two-input call such as
    ``encode(x, eta)``. Subclasses set ``encode``, ``decode_mean`` and ``decode_var``.
    """

    def __init__(self, model, params_yaml: str = "", *, name: str):
        super().__init__(name=name)
        self.encoder = model.encoder
        self.mean_decoder = model.mean_decoder
        self.var_decoder = model.var_decoder
        self.latent_channels = tf.Variable(int(model.latent_channels), trainable=False, dtype=tf.int64)
        self.stride = tf.Variable(int(model.stride), trainable=False, dtype=tf.int64)
        self.params_yaml = tf.Variable(params_yaml, trainable=False, dtype=tf.string)

    def signatures(self) -> dict:
        """The concrete functions to pass as ``signatures=`` to ``tf.saved_model.save``."""
        return {name: getattr(self, name).get_concrete_function() for name in ("encode", "decode_mean", "decode_var")}
