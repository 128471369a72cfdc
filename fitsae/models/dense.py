"""Dense (1-D latent) tunable autoencoder, as in the seed's MNIST/toy notebooks.

The image is flattened and encoded to a vector of C units. With no hidden layers and a linear
activation it is the linear autoencoder that, trained with η sampling (nested dropout), recovers
the ordered PCA basis. It needs a fixed image size, so it trains on tiles or crops of one size.
"""

from __future__ import annotations

import keras

from fitsae.models.config import ModelConfig
from fitsae.models.tunable import LogVarianceHead, TunableAutoencoder

__all__ = ["build_dense"]


def _decoder(cfg: ModelConfig, image_shape, name: str, logvar: bool) -> keras.Model:
    pixels = 1
    for n in image_shape:
        pixels *= n
    z = keras.Input((cfg.latent_channels,), name=f"{name}_z")
    h = z
    for i, width in enumerate(reversed(cfg.hidden)):
        h = keras.layers.Dense(width, activation=cfg.activation, name=f"{name}_dense{i}")(h)
    out = keras.layers.Dense(pixels, name=f"{name}_head")(h)
    if logvar:
        out = LogVarianceHead(cfg.logvar_min, cfg.logvar_max, name=f"{name}_clamp")(out)
    out = keras.layers.Reshape(tuple(image_shape), name=f"{name}_image")(out)
    return keras.Model(z, out, name=name)


def build_dense(cfg: ModelConfig, image_shape) -> TunableAutoencoder:
    """Build the dense tunable AE for images of ``image_shape`` = (H, W, channels)."""
    if any(n is None for n in image_shape):
        raise ValueError(f"a dense model needs a fixed image size, got {tuple(image_shape)}; set data.crop or data.tile")
    x = keras.Input(tuple(image_shape), name="image")
    h = keras.layers.Flatten(name="flatten")(x)
    for i, width in enumerate(cfg.hidden):
        h = keras.layers.Dense(width, activation=cfg.activation, name=f"encoder_dense{i}")(h)
    z = keras.layers.Dense(cfg.latent_channels, name="latent")(h)
    encoder = keras.Model(x, z, name="encoder")
    return TunableAutoencoder(
        encoder,
        _decoder(cfg, image_shape, "mean_decoder", logvar=False),
        _decoder(cfg, image_shape, "var_decoder", logvar=True),
        cfg, image_shape, name="dense_tunable_ae",
    )
