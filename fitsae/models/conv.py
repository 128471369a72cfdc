"""Fully-convolutional tunable autoencoder.

The latent is (H/stride, W/stride, C); η keeps the first η channels at every position. With no
dense layer the parameter count does not grow with the image, and one model trains on small crops
and compresses 256×256 tiles or whole mosaics, as long as each side is divisible by the stride.
"""

from __future__ import annotations

import keras

from fitsae.models.config import ModelConfig
from fitsae.models.tunable import LogVarianceHead, TunableAutoencoder

__all__ = ["build_conv"]


def _conv(cfg: ModelConfig, width: int, name: str, strides: int = 1, transpose: bool = False, activation="cfg"):
    layer = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    return layer(
        width, cfg.kernel_size, strides=strides, padding="same",
        activation=cfg.activation if activation == "cfg" else activation, name=name,
    )


def _encoder(cfg: ModelConfig, channels: int) -> keras.Model:
    x = keras.Input((None, None, channels), name="image")
    h = x
    for i, (width, stride) in enumerate(zip(cfg.filters, cfg.stage_strides)):
        h = _conv(cfg, width, f"encoder_down{i}", strides=stride)(h)
        for b in range(cfg.blocks_per_stage):
            h = _conv(cfg, width, f"encoder_block{i}_{b}")(h)
    z = _conv(cfg, cfg.latent_channels, "latent", activation=None)(h)
    return keras.Model(x, z, name="encoder")


def _upsample(cfg: ModelConfig, width: int, stride: int, name: str):
    """One decoder up-sampling step by ``stride`` (``cfg.upsample`` says how and why)."""
    if cfg.upsample == "transpose":
        return _conv(cfg, width, name, strides=stride, transpose=True)
    resize = keras.layers.UpSampling2D(stride, interpolation="nearest", name=f"{name}_resize")
    conv = _conv(cfg, width, name)
    return lambda h: conv(resize(h))


def _decoder(cfg: ModelConfig, channels: int, name: str, logvar: bool) -> keras.Model:
    z = keras.Input((None, None, cfg.latent_channels), name=f"{name}_z")
    widths = list(reversed(cfg.filters))
    h = _conv(cfg, widths[0], f"{name}_in")(z)
    for i, (width, stride) in enumerate(zip(widths, reversed(cfg.stage_strides))):
        h = _upsample(cfg, width, stride, f"{name}_up{i}")(h)
        for b in range(cfg.blocks_per_stage):
            h = _conv(cfg, width, f"{name}_block{i}_{b}")(h)
    out = _conv(cfg, channels, f"{name}_head", activation=None)(h)
    if logvar:
        out = LogVarianceHead(cfg.logvar_min, cfg.logvar_max, name=f"{name}_clamp")(out)
    return keras.Model(z, out, name=name)


def build_conv(cfg: ModelConfig, image_shape=(None, None, 1)) -> TunableAutoencoder:
    """Build the fully-convolutional tunable AE; ``image_shape`` only fixes the channel count
    and, when H and W are given, checks they are divisible by the total stride."""
    height, width, channels = image_shape
    stride = cfg.total_stride
    for side, n in (("height", height), ("width", width)):
        if n is not None and n % stride:
            raise ValueError(f"image {side} {n} is not divisible by the model's total stride {stride}")
    return TunableAutoencoder(
        _encoder(cfg, channels),
        _decoder(cfg, channels, "mean_decoder", logvar=False),
        _decoder(cfg, channels, "var_decoder", logvar=True),
        cfg, (None, None, channels), name="conv_tunable_ae",
    )
