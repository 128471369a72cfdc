"""The β-VAE's networks: encoders and decoders conditioned on log β by FiLM.

Contract: ``dense_encoder``/``conv_encoder`` map (x, log β) to the posterior's stacked mean and
log-variance (2·C channels); ``dense_decoder``/``conv_decoder`` map (z, log β) to one image-shaped
output (the mean or the log σ² map). Every layer is followed by :class:`FiLM`, so each knows the β
it works for; there is no BatchNorm, whose batch statistics would mix samples of different β.
Kept apart from :mod:`fitsae.models.bvae`, which owns the objective and the model protocol.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

__all__ = ["FiLM", "dense_encoder", "dense_decoder", "conv_encoder", "conv_decoder"]


@keras.saving.register_keras_serializable(package="fitsae")
class FiLM(layers.Layer):
    """Feature-wise linear modulation ``h · (1 + γ(c)) + δ(c)`` by a conditioning vector ``c``.

    γ and δ start at zero, so an untrained network is the unconditioned one and learns how much to
    listen to log β. Works on dense ``(B, N)`` and conv ``(B, H, W, N)`` activations.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.project = None

    def build(self, input_shape):
        h_shape, _ = input_shape
        self.project = layers.Dense(2 * h_shape[-1], kernel_initializer="zeros", name="project")
        self.project.build(input_shape[1])

    def call(self, inputs):
        h, c = inputs
        gamma, delta = ops.split(self.project(c), 2, axis=-1)
        for _ in range(len(h.shape) - 2):
            gamma = ops.expand_dims(gamma, 1)
            delta = ops.expand_dims(delta, 1)
        return h * (1.0 + gamma) + delta


def _embed_logbeta(logbeta_in, mc, name: str):
    """Map log β (B, 1) to a small conditioning vector; the fixed rescaling maps U(a, b) to [-1, 1]."""
    a, b = mc.bvae.logbeta_range
    half = 0.5 * (b - a)
    u = layers.Rescaling(1.0 / half, offset=-(0.5 * (a + b)) / half, name=f"{name}_unit")(logbeta_in)
    return layers.Dense(mc.bvae.conditioning_units, activation=mc.activation, name=f"{name}_embed")(u)


def dense_encoder(mc, image_shape):
    x_in = keras.Input(image_shape, name="x")
    lb_in = keras.Input((1,), name="logbeta")
    c = _embed_logbeta(lb_in, mc, "enc")
    h = layers.Flatten()(x_in)
    for i, width in enumerate(mc.hidden):
        h = layers.Dense(width, activation=mc.activation, name=f"enc_dense{i}")(h)
        h = FiLM(name=f"enc_film{i}")([h, c])
    stats = layers.Dense(2 * mc.latent_channels, name="enc_head")(h)
    return keras.Model([x_in, lb_in], stats, name="encoder")


def dense_decoder(mc, image_shape, name):
    z_in = keras.Input((mc.latent_channels,), name="z")
    lb_in = keras.Input((1,), name="logbeta")
    c = _embed_logbeta(lb_in, mc, name)
    h = z_in
    for i, width in enumerate(reversed(mc.hidden)):
        h = layers.Dense(width, activation=mc.activation, name=f"{name}_dense{i}")(h)
        h = FiLM(name=f"{name}_film{i}")([h, c])
    out = layers.Dense(math.prod(image_shape), name=f"{name}_head")(h)
    out = layers.Reshape(image_shape)(out)
    return keras.Model([z_in, lb_in], out, name=name)


def _conv_stage(h, c, mc, filters, stride, name, transpose=False):
    """One resolution change (stride ``stride``) plus ``blocks_per_stage`` stride-1 convolutions,
    each followed by FiLM so every layer knows the β it is working for."""
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    h = conv(filters, mc.kernel_size, strides=stride, padding="same", activation=mc.activation, name=f"{name}")(h)
    h = FiLM(name=f"{name}_film")([h, c])
    for j in range(mc.blocks_per_stage):
        h = layers.Conv2D(filters, mc.kernel_size, padding="same", activation=mc.activation, name=f"{name}_b{j}")(h)
        h = FiLM(name=f"{name}_b{j}_film")([h, c])
    return h


def conv_encoder(mc, image_shape):
    x_in = keras.Input((None, None, image_shape[-1]), name="x")
    lb_in = keras.Input((1,), name="logbeta")
    c = _embed_logbeta(lb_in, mc, "enc")
    h = x_in
    for i, (filters, stride) in enumerate(zip(mc.filters, mc.stage_strides)):
        h = _conv_stage(h, c, mc, filters, stride, f"enc_conv{i}")
    stats = layers.Conv2D(2 * mc.latent_channels, mc.kernel_size, padding="same", name="enc_head")(h)
    return keras.Model([x_in, lb_in], stats, name="encoder")


def conv_decoder(mc, image_shape, name):
    z_in = keras.Input((None, None, mc.latent_channels), name="z")
    lb_in = keras.Input((1,), name="logbeta")
    c = _embed_logbeta(lb_in, mc, name)
    h = z_in
    stages = list(zip(mc.filters, mc.stage_strides))[::-1]
    for i, (filters, stride) in enumerate(stages):
        h = _conv_stage(h, c, mc, filters, stride, f"{name}_deconv{i}", transpose=True)
    out = layers.Conv2D(image_shape[-1], mc.kernel_size, padding="same", name=f"{name}_head")(h)
    return keras.Model([z_in, lb_in], out, name=name)
