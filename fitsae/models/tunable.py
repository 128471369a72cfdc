"""The dual-decoder tunable-rate autoencoder that dense and conv models share.

An encoder f maps an image to latents z; a mask keeps the first η units (dense) or channels
(conv); a mean decoder g_μ reconstructs the image and a variance decoder g_σ predicts log σ² per
pixel. The training loop only sees the protocol below (``encode``/``decode_mean``/``decode_var``,
``primary_variables``/``variance_variables``, ``compute_losses``), so the β-VAE and any future
model plug into the same loop, checkpoints and export.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from fitsae import losses
from fitsae.models import masking
from fitsae.models.config import ModelConfig
from fitsae.models.inference import InferenceModule
from fitsae.models.prior import FactorizedPrior
from fitsae.models.protocol import TileScoring

__all__ = ["LogVarianceHead", "TunableAutoencoder"]


class LogVarianceHead(keras.layers.Layer):
    """Linear log σ² output, softly clamped to [low, high] (see :func:`fitsae.losses.soft_clamp`)."""

    def __init__(self, low: float, high: float, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = float(low), float(high)

    def call(self, raw):
        return losses.soft_clamp(raw, self.low, self.high)

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}


class TunableAutoencoder(TileScoring, keras.Model):
    """Encoder + mean decoder + variance decoder, with η masking between them.

    Parameters
    ----------
    encoder, mean_decoder, var_decoder : keras.Model
        Built sub-models: image → z, z → μ, z → log σ².
    model_config : ModelConfig
    image_shape : tuple
        (H, W, channels) the model was built for; H and W are None for a conv model, which takes
        any size divisible by ``stride``.

    Attributes
    ----------
    rate_control : str
        ``"eta"``: the rate is the integer number of kept latent channels, ``encode(x, eta)``.
        Evaluation picks how to score a model from this (the β-VAE's is ``"logbeta"``).
    fixed_size : bool
        Whether the latent is one vector per image of the trained size (dense), see
        :mod:`fitsae.models.protocol`.
    """

    rate_control = "eta"

    def __init__(self, encoder, mean_decoder, var_decoder, model_config: ModelConfig, image_shape, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.mean_decoder = mean_decoder
        self.var_decoder = var_decoder
        self.model_config = model_config
        self.image_shape = tuple(image_shape)
        self.latent_channels = int(model_config.latent_channels)
        self.stride = int(model_config.total_stride)
        self.fixed_size = model_config.architecture == "dense"
        # Only models trained for rate carry a prior: a checkpoint written before the codec has
        # no prior variables, and restoring it into a model that had some would fail.
        self.prior = FactorizedPrior(self.latent_channels, name="prior") if self.trains_rate else None

    @property
    def trains_rate(self) -> bool:
        """Whether the loss of optimizer 1 is λ·D + R (a learned prior) rather than the MSE."""
        return self.model_config.rate_lambda is not None

    def quantize_latent(self, z):
        """The latent the decoder sees from a file: rounded for a rate-trained model, else as is.

        A model trained without rate never saw rounding; the codec quantizes its latents on a
        finer per-channel grid (:mod:`fitsae.entropy`), not here.
        """
        return tf.round(z) if self.trains_rate else z

    def image_predictions(self, x, etas) -> dict:
        """``{"eta_<η>": (μ, log σ²)}`` for TensorBoard's image panels, at each of ``etas``."""
        x = tf.convert_to_tensor(x, tf.float32)
        out = {}
        for eta in etas:
            z = self.quantize_latent(self.encode(x, tf.fill([tf.shape(x)[0]], tf.constant(int(eta), tf.int32))))
            out[f"eta_{int(eta):03d}"] = (self.decode_mean(z), self.decode_var(z))
        return out

    def coded_rates(self, x, etas) -> dict:
        """``{"rate/bpp_coded/eta_<η>": bits per pixel}``: ``x``'s latents at each η, rounded and
        really coded under tables frozen from the current prior (empty without a rate term)."""
        if self.prior is None:
            return {}
        from fitsae.entropy import encode_latents, tables_from_prior

        x = tf.convert_to_tensor(x, tf.float32)
        tables = tables_from_prior(self.prior)
        pixels = int(x.shape[0]) * int(x.shape[1]) * int(x.shape[2])
        out = {}
        for eta in etas:
            z = self.encode(x, tf.fill([tf.shape(x)[0]], tf.constant(int(eta), tf.int32)))
            k = tables.symbols(np.asarray(z)[..., : int(eta)])
            coded = sum(len(encode_latents(tables, k[i])[0]) for i in range(len(k)))
            out[f"rate/bpp_coded/eta_{int(eta):03d}"] = 8.0 * coded / pixels
        return out

    def inference_module(self, params_yaml: str = "") -> "TunableInference":
        """What ``fitsae.train.export`` saves: encode/decode with fixed input signatures."""
        return TunableInference(self, params_yaml)

    def latent_shape(self, height, width) -> tuple:
        """Shape of one example's latent for an image of (height, width); None stays None."""
        if self.fixed_size:
            return (self.latent_channels,)
        rows, cols = (None if n is None else n // self.stride for n in (height, width))
        return (rows, cols, self.latent_channels)

    def encode(self, x, eta, training: bool = False):
        """Latents of ``x`` with all but the first ``eta`` (int32, (B,)) units/channels zeroed."""
        return masking.apply_mask(self.encoder(x, training=training), eta)

    def decode_mean(self, z, training: bool = False):
        """Reconstruction μ (linear head) from (masked) latents."""
        return self.mean_decoder(z, training=training)

    def decode_var(self, z, training: bool = False):
        """Per-pixel log σ² (clamped linear head) from (masked) latents."""
        return self.var_decoder(z, training=training)

    def call(self, x, eta, training: bool = False):
        z = self.encode(x, eta, training=training)
        return self.decode_mean(z, training=training), self.decode_var(z, training=training)

    @property
    def primary_variables(self) -> list:
        """Trained by optimizer 1 on the MSE (or λ·D + R): encoder, mean decoder (and the prior)."""
        own = list(self.encoder.trainable_variables) + list(self.mean_decoder.trainable_variables)
        return own + (list(self.prior.trainable_variables) if self.prior is not None else [])

    @property
    def variance_variables(self) -> list:
        """Trained by optimizer 2 on the NLL: the variance decoder (and encoder if allowed)."""
        own = list(self.var_decoder.trainable_variables)
        if self.model_config.nll_to_encoder:
            own += list(self.encoder.trainable_variables)
        return own

    def sample_eta(self, batch_size, step, seed, rank):
        """η for one training batch, drawn in the graph (see :mod:`fitsae.models.masking`)."""
        cfg = self.model_config
        return masking.sample_eta(
            masking.step_seed(seed, rank, step, "eta"), batch_size, self.latent_channels,
            distribution=cfg.eta_distribution, per=cfg.eta_per, eta_min=cfg.eta_min,
            geometric_p=cfg.eta_geometric_p,
        )

    def compute_losses(self, x, step, seed, rank, training: bool = True, eta=None, noise=None,
                       softening=None) -> dict:
        """Losses for both optimizers and per-example metrics for one batch.

        Parameters
        ----------
        x : tf.Tensor
            (B, H, W, 1) normalized images.
        step, seed, rank : int or scalar tensors
            Seed the in-graph η draw: different per step and rank, identical on resume.
        training : bool
        eta : tf.Tensor, optional
            int32 (B,) to evaluate at a fixed rate instead of drawing η.
        noise : tf.Tensor, optional
            The batch's noise σ; unused here (MSE and NLL need no noise scale), accepted so the
            loop treats every model alike (the β-VAE's reconstruction term needs it).
        softening : float, optional
            The data's asinh softening (None: the data are linear), which the flux term
            (``model.flux_weight``) needs to sum fluxes in linear units.

        Returns
        -------
        dict
            ``loss_primary`` (mean MSE, or mean λ(η)·MSE + bpp for a rate-trained model:
            optimizer 1), ``loss_variance`` (mean Gaussian NLL, optimizer 2), and per-example (B,)
            float32 ``mse``, ``nll``, ``eta`` and, with a rate term, ``bpp`` (bits per pixel of
            the kept channels under the prior: of the noisy latent in training, of the rounded
            one otherwise).
        """
        if eta is None:
            eta = self.sample_eta(tf.shape(x)[0], step, seed, rank)
        out = {}
        if self.trains_rate:
            z = self.encoder(x, training=training)
            if training:
                u = tf.random.stateless_uniform(tf.shape(z), masking.step_seed(seed, rank, step, "quantize"),
                                                minval=-0.5, maxval=0.5)
                z_rate = z + u
                rounded = z + tf.stop_gradient(tf.round(z) - z)  # straight-through
                z_decoded = rounded if self.model_config.rate_decoder_input == "round" else z_rate
            else:
                z_rate = z_decoded = tf.round(z)
            mask = masking.latent_mask(eta, self.latent_channels, len(z.shape), z.dtype)
            latent_axes = list(range(1, len(z.shape)))
            pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:3]), tf.float32)
            bpp = tf.reduce_sum(self.prior.bits(z_rate) * mask, axis=latent_axes) / pixels
            z = z_decoded * mask
            out["bpp"] = bpp
        else:
            z = self.encode(x, eta, training=training)
        mu = self.decode_mean(z, training=training)
        # The variance decoder explains the error of a *given* reconstruction: without the
        # stop_gradient the NLL would pull μ and z towards whatever makes σ easy to predict.
        z_var = z if self.model_config.nll_to_encoder else tf.stop_gradient(z)
        logvar = self.decode_var(z_var, training=training)
        mse = losses.mse(x, mu)
        nll = losses.gaussian_nll(x, tf.stop_gradient(mu), logvar)
        distortion, flux = self._distortion(x, mu, softening)
        if flux is not None:
            out["flux"] = flux
        if self.trains_rate:
            primary = tf.reduce_mean(self._rate_lambda(eta) * distortion + out["bpp"])
        else:
            primary = tf.reduce_mean(distortion)
        return {
            "loss_primary": primary,
            "loss_variance": tf.reduce_mean(nll),
            "mse": mse,
            "nll": nll,
            "eta": tf.cast(eta, tf.float32),
            **out,
        }


    def _distortion(self, x, mu, softening):
        """Per-example distortion the primary loss weighs by λ, and the flux term in it (or None)."""
        cfg = self.model_config
        distortion = losses.mse(x, mu) if cfg.distortion_weight_softening is None else \
            losses.weighted_mse(x, mu, cfg.distortion_weight_softening)
        if cfg.flux_weight is None:
            return distortion, None
        flux = losses.window_flux_error(x, mu, cfg.flux_window, softening)
        return distortion + cfg.flux_weight * flux, flux

    def _rate_lambda(self, eta):
        """λ(η) = λ·(η/C)^p, the distortion's weight against bits at η kept channels."""
        share = tf.cast(eta, tf.float32) / float(self.latent_channels)
        return self.model_config.rate_lambda * tf.pow(share, self.model_config.rate_lambda_eta_power)

    def coding_loss(self, x, latents, softening=None):
        """The training objective of coding ``x`` with given latents, as a file would code them.

        Parameters
        ----------
        x : tf.Tensor
            (1, H, W, 1) normalized tile.
        latents : tf.Tensor
            (1, …, η) its first η latent channels, before rounding.
        softening : float, optional
            As in :meth:`compute_losses` (only a flux term uses it).

        Returns
        -------
        tf.Tensor
            Scalar λ(η)·distortion + bits per pixel under the prior, of the *rounded* latents,
            the other channels zero: what training scores at this η, on the integers a file
            holds. The rounding is straight-through (identity gradient), so encoder-side
            refinement (:mod:`fitsae.codec.refine`) can descend it; a lower value is a better
            tile by the model's own standard.
        """
        if not self.trains_rate:
            raise ValueError("coding_loss needs a model trained for rate (model.rate_lambda): it has no prior")
        eta = latents.shape[-1]
        rounded = latents + tf.stop_gradient(tf.round(latents) - latents)
        dropped = tf.zeros(tf.concat([tf.shape(rounded)[:-1], [self.latent_channels - eta]], 0), rounded.dtype)
        full = tf.concat([rounded, dropped], -1)
        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:3]), tf.float32)
        bpp = tf.reduce_sum(self.prior.bits(full)[..., :eta]) / pixels
        distortion, _ = self._distortion(x, self.decode_mean(full), softening)
        return self._rate_lambda(eta) * tf.reduce_sum(distortion) + bpp


class TunableInference(InferenceModule):
    """The inference half of a tunable autoencoder, with traced input signatures for SavedModel.

    ``encode(x, eta)`` → masked latents, ``decode_mean(z)`` → μ, ``decode_var(z)`` → log σ²;
    ``latent_channels``, ``stride`` and ``params_yaml`` travel as variables (:class:`InferenceModule`).
    """

    def __init__(self, model: "TunableAutoencoder", params_yaml: str = ""):
        super().__init__(model, params_yaml, name="fitsae_inference")
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
