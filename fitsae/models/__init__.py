"""Tunable-rate autoencoders: :func:`build_model` turns a ``model:`` config into a model.

Every model follows the protocol of :class:`fitsae.models.tunable.TunableAutoencoder`
(encoder / mean_decoder / var_decoder, ``encode(x, eta)``, ``decode_mean``, ``decode_var``,
``primary_variables``, ``variance_variables``, ``compute_losses``), which is all the training
loop, checkpoints, export and evaluation rely on. Submodules are imported lazily so that
``fitsae.models.config`` can be read without loading TensorFlow.
"""

from __future__ import annotations

__all__ = ["build_model"]


def build_model(model_cfg, image_shape=(None, None, 1)):
    """Build (with all variables created) the model described by ``model_cfg``.

    Parameters
    ----------
    model_cfg : fitsae.models.config.ModelConfig
    image_shape : tuple
        (H, W, channels). Dense models need H and W; conv models accept None and check
        divisibility by the total stride when sizes are given.
    """
    kind = model_cfg.kind
    if kind == "dense":
        from fitsae.models.dense import build_dense

        return build_dense(model_cfg, image_shape)
    if kind == "conv":
        from fitsae.models.conv import build_conv

        return build_conv(model_cfg, image_shape)
    if kind == "bvae":
        from fitsae.models.bvae import build_bvae

        return build_bvae(model_cfg, image_shape)
    raise ValueError(f"unknown model kind {kind!r}; expected dense, conv or bvae")
