"""The model as a probability model: μ and σ per pixel, computed identically by every decoder.

Contract: :class:`Predictor` gives, for the same integers, the same μ and σ in any process,
thread count or machine, to ~10⁻¹⁶ relative: the decoders run here in float64, as a copy of the
model with the same weights. The per-tile checksum of the decoded pixels
(:mod:`fitsae.codec.bounded`) turns the rare remaining flip into an error, never a silently
different image.

Why: in the error-bounded modes encoder and decoder must derive the same probabilities from the
same integers, and TensorFlow's float32 results depend on the thread count (kernels split sums
differently) by far more than a grid edge can tolerate (docs/measurements.md, "Codec").
"""

from __future__ import annotations

import numpy as np

__all__ = ["Predictor"]


class Predictor:
    """Float64 decoders of a frozen model: integers of the latents → normalized μ and log σ²."""

    def __init__(self, frozen):
        import keras

        from fitsae.models import build_model
        from fitsae.train.config import training_image_shape

        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float64")
        try:
            self.model = build_model(frozen.cfg.model, training_image_shape(frozen.cfg))
        finally:
            keras.config.set_dtype_policy(previous)
        self.model.set_weights([np.asarray(w, np.float64) for w in frozen.model.get_weights()])
        self.tables = frozen.tables
        self.channels = int(frozen.model.latent_channels)

    def __call__(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(μ, log σ²), each (H, W) float64 normalized, of one tile's latent integers (…, η′)."""
        import tensorflow as tf

        kept = k.shape[-1]
        full = np.zeros(k.shape[:-1] + (self.channels,), np.float64)
        full[..., :kept] = self.tables.values(k)  # the float32 latents the lossy decoder sees, exactly
        z = tf.convert_to_tensor(full[None], tf.float64)
        mu = np.asarray(self.model.decode_mean(z), np.float64)[0, ..., 0]
        log_var = np.asarray(self.model.decode_var(z), np.float64)[0, ..., 0]
        return mu, log_var
