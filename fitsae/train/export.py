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

__all__ = ["export_model"]


def export_model(model, path, params_yaml: str = "") -> Path:
    """Write ``model`` as a SavedModel at ``path`` (replacing an older export there)."""
    path = Path(path)
    module = model.inference_module(params_yaml)
    tf.saved_model.save(module, str(path), signatures=module.signatures())
    return path
