"""Export a trained model as a SavedModel that needs only TensorFlow to use.

``RUN/export/`` loads with ``tf.saved_model.load(path)`` in any TensorFlow 2 program, without
fitsae or Keras custom objects, and offers three signatures-fixed functions:

- ``encode(x, eta)``: x float32 (B, H, W, 1) normalized, eta int32 (B,) → masked latents;
- ``decode_mean(z)`` → μ (B, H, W, 1);
- ``decode_var(z)`` → log σ² (B, H, W, 1);

plus ``latent_channels`` and ``stride`` (int variables) and ``params_yaml`` (the run's config, a
string variable) so a user can tell how the data were normalized. Dense models fix H and W; conv
models accept any size divisible by ``stride``. A model trained for rate also leaves
``tables.fits``: its prior frozen into the integer probability tables the coder uses
(:mod:`fitsae.entropy`), so the export holds everything needed to code its latents.
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
    if getattr(model, "prior", None) is not None:
        from astropy.io import fits

        from fitsae.entropy import tables_from_prior, tables_to_hdu

        fits.HDUList([fits.PrimaryHDU(), tables_to_hdu(tables_from_prior(model.prior))]).writeto(
            path / "tables.fits", overwrite=True, checksum=True)
    return path
