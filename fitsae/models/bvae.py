"""β-conditioned variational autoencoder: one network for a whole rate–distortion curve.

Contract (Huang et al., arXiv 2210.11489): encoder q(z | x, log β) and decoders g(z, log β) all
receive log10 β; each training sample draws its own log β ~ U(a, b) and the objective is
``mean_i [recon_i + β_r · 10**logβ_i · KL_i]``, ``recon_i`` the Gaussian NLL summed over pixels
at the image's noise σ (β = 1 is the negative ELBO). Fixing log β at inference picks one operating
point. Like the tunable AEs, optimizer 1 trains encoder and mean decoder on that objective and
optimizer 2 a variance decoder on the NLL at the posterior mean with z and μ held fixed; log β and
the reparameterisation noise are drawn in the graph from (seed, rank, step). Conditioning is FiLM,
with no BatchNorm (:mod:`fitsae.models.bvae_networks`).

One reason for the per-sample β (:func:`fitsae.models.bvae_losses.beta_objective`): the seed
notebook's batch-averaged β carried no β signal (DESIGN.md, "The science in five lines").
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from fitsae import losses
from fitsae.models.bvae_losses import beta_objective, diag_gaussian_kl, gaussian_nll_sum, kl_per_sample
from fitsae.models.bvae_networks import conv_decoder, conv_encoder, dense_decoder, dense_encoder
from fitsae.models.inference import InferenceModule
from fitsae.models.masking import step_seed
from fitsae.models.protocol import TileScoring

__all__ = ["BetaVAE", "BVAEInference", "build_bvae", "ACTIVE_NATS"]

# A latent channel is "active" for an image when it carries more than this many nats per latent
# position (Burda et al. 2016 use a 0.01 variance threshold; in nats it is the same order).
ACTIVE_NATS = 0.01

# Bounds of the posterior log-variance (soft, see fitsae.losses.soft_clamp). A posterior wider than
# the N(0, 1) prior is never optimal, so the upper bound (σ_z ≈ 7) only keeps an early overshoot
# from feeding huge z into the decoder (a hard clip let it: docs/measurements.md, "β-VAE"); the
# lower bound (σ_z ≈ 5e-5, ≈ 10 nats per latent value) is far below what any trained β uses.
_LOGVAR_Z_BOUNDS = (-20.0, 4.0)


def _as_column(logbeta: tf.Tensor) -> tf.Tensor:
    """(B,) log β → the (B, 1) input of the sub-models; refuses anything but a vector."""
    logbeta = tf.convert_to_tensor(logbeta, tf.float32)
    if logbeta.shape.rank != 1:
        raise ValueError(f"logbeta must have shape (B,), got {logbeta.shape}")
    return logbeta[:, None]


class BetaVAE(TileScoring, keras.Model):
    """The β-VAE with the fitsae model protocol (see module docstring).

    Parameters
    ----------
    model_cfg
        The ``model:`` section (:class:`fitsae.models.config.ModelConfig`, ``kind: bvae``): layer sizes
        from it, β-VAE specifics from its ``bvae`` sub-section.
    image_shape
        ``(H, W, 1)`` of training crops. The conv architecture accepts any H, W divisible by
        :attr:`stride`; the dense one only ``image_shape``.

    Notes
    -----
    Where the tunable AEs take the mask size ``eta``, this model takes ``logbeta`` (float32 ``(B,)``,
    log10 β): ``encode(x, logbeta)`` returns the posterior mean, ``decode_mean(z, logbeta)`` and
    ``decode_var(z, logbeta)`` the mean image and log σ² map. :attr:`rate_control` says so
    (``"logbeta"``), and evaluation scores the model by it.
    """

    rate_control = "logbeta"

    def __init__(self, model_cfg, image_shape=(256, 256, 1), **kwargs):
        super().__init__(**kwargs)
        self.model_config = model_cfg
        self.cfg = model_cfg.bvae
        if len(image_shape) != 3:
            raise ValueError(f"image_shape must be (H, W, channels), got {image_shape}")
        self.image_shape = tuple(None if s is None else int(s) for s in image_shape)
        self.latent_channels = model_cfg.latent_channels
        self.fixed_size = model_cfg.architecture == "dense"
        h, w, _ = self.image_shape
        if self.cfg.architecture == "dense":
            if h is None or w is None:
                raise ValueError(f"a dense β-VAE needs a fixed image size, got image_shape {image_shape}")
            if not model_cfg.hidden:
                raise ValueError("model.kind=bvae with bvae.architecture=dense needs at least one width in model.hidden")
            self.stride = 1
            self.encoder = dense_encoder(model_cfg, self.image_shape)
            self.mean_decoder = dense_decoder(model_cfg, self.image_shape, "mean_decoder")
            self.var_decoder = dense_decoder(model_cfg, self.image_shape, "var_decoder")
        else:
            if not model_cfg.filters:
                raise ValueError("model.kind=bvae with bvae.architecture=conv needs at least one stage in model.filters")
            if model_cfg.strides and len(model_cfg.strides) != len(model_cfg.filters):
                raise ValueError(f"model.strides {model_cfg.strides} must have one entry per stage of model.filters")
            self.stride = math.prod(model_cfg.stage_strides)
            if any(side is not None and side % self.stride for side in (h, w)):
                raise ValueError(
                    f"bvae conv: image {h}x{w} is not divisible by the total stride {self.stride} "
                    f"(product of model.strides); choose a tile/crop that is a multiple of {self.stride}"
                )
            self.encoder = conv_encoder(model_cfg, self.image_shape)
            self.mean_decoder = conv_decoder(model_cfg, self.image_shape, "mean_decoder")
            self.var_decoder = conv_decoder(model_cfg, self.image_shape, "var_decoder")

    # ------------------------------------------------------------------ shapes and variables
    def latent_shape(self, height, width) -> tuple:
        """Shape of one image's latent: ``(C,)`` for dense, ``(H/s, W/s, C)`` for conv; None stays None."""
        if self.cfg.architecture == "dense":
            return (self.latent_channels,)
        rows, cols = (None if n is None else n // self.stride for n in (height, width))
        return (rows, cols, self.latent_channels)

    @property
    def primary_variables(self) -> list:
        """Optimizer 1: encoder and mean decoder, trained on the β-weighted objective."""
        return self.encoder.trainable_variables + self.mean_decoder.trainable_variables

    @property
    def variance_variables(self) -> list:
        """Optimizer 2: the variance decoder (and the encoder when ``nll_to_encoder``)."""
        extra = self.encoder.trainable_variables if self.model_config.nll_to_encoder else []
        return self.var_decoder.trainable_variables + extra

    # ------------------------------------------------------------------ inference
    def posterior(self, x, logbeta, training: bool = False):
        """Mean and log-variance of q(z | x, log β), each of :meth:`latent_shape`."""
        stats = self.encoder([x, _as_column(logbeta)], training=training)
        mu, logvar = tf.split(stats, 2, axis=-1)
        return mu, losses.soft_clamp(logvar, *_LOGVAR_Z_BOUNDS)

    def encode(self, x, logbeta):
        """The latent to store: the posterior mean at this log β."""
        return self.posterior(x, logbeta)[0]

    def decode_mean(self, z, logbeta, training: bool = False):
        return self.mean_decoder([z, _as_column(logbeta)], training=training)

    def decode_var(self, z, logbeta, training: bool = False):
        """log σ² per pixel, softly clamped to [logvar_min, logvar_max] as in the tunable AEs."""
        raw = self.var_decoder([z, _as_column(logbeta)], training=training)
        return losses.soft_clamp(raw, self.model_config.logvar_min, self.model_config.logvar_max)

    def call(self, x, logbeta, training: bool = False):
        """(μ, log σ²) from the posterior mean at the given log β (B,), like the tunable AEs' (x, eta)."""
        z = self.encode(x, logbeta)
        return self.decode_mean(z, logbeta, training=training), self.decode_var(z, logbeta, training=training)

    # ------------------------------------------------------------------ randomness
    def sample_logbeta(self, batch: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        """log β ~ U(a, b), one per sample, shape ``(B,)``."""
        a, b = self.cfg.logbeta_range
        return tf.random.stateless_uniform([batch], seed=key, minval=a, maxval=b, dtype=tf.float32)

    # ------------------------------------------------------------------ losses
    def per_sample_terms(self, x, logbeta, eps, noise, training: bool = False) -> dict:
        """Everything the objective and the metrics need, per sample, for given log β and noise ε.

        Kept separate from :meth:`compute_losses` so tests and evaluation can fix log β and ε.
        """
        mu_z, logvar_z = self.posterior(x, logbeta, training=training)
        z = mu_z + tf.exp(0.5 * logvar_z) * eps
        mean = self.decode_mean(z, logbeta, training=training)
        kl_values = diag_gaussian_kl(mu_z, logvar_z)
        return {
            "mu_z": mu_z,
            "z": z,
            "mean": mean,
            "kl_values": kl_values,
            "recon": gaussian_nll_sum(x, mean, noise),
            "kl": kl_per_sample(kl_values),
            "kl_penalised": kl_per_sample(kl_values, self.cfg.free_bits),
        }

    def kl_warmup(self, step) -> tf.Tensor:
        """KL weight multiplier at this step: a linear ramp to 1 over ``kl_warmup_steps``."""
        if self.cfg.kl_warmup_steps <= 0:
            return tf.constant(1.0)
        ramp = (tf.cast(step, tf.float32) + 1.0) / float(self.cfg.kl_warmup_steps)
        return tf.minimum(1.0, ramp)

    def compute_losses(self, x, step, seed, rank, training: bool = True, noise=None, logbeta=None,
                       softening=None) -> dict:
        """Both optimizers' losses and per-sample metrics for one batch.

        Parameters
        ----------
        x
            ``(B, H, W, 1)`` normalized images.
        step, seed, rank
            Seed the in-graph draws of log β and ε.
        noise
            ``(B,)`` noise σ per image in normalized units (the batch's ``"noise"``). ``None`` means
            1, which is what fitsae's normalization aims for.
        logbeta
            ``(B,)`` to evaluate at fixed log β instead of drawing it.
        softening
            The data's asinh softening; unused (no flux term here), accepted so the loop treats
            every model alike.

        Returns
        -------
        dict
            Scalars ``loss_primary`` (β-weighted objective, on a posterior sample) and ``loss_variance``
            (variance head NLL at the posterior mean, as inference uses the head); per-sample ``(B,)``:
            ``mse``, ``nll``, ``recon``, ``kl`` (nats per image), ``rate`` (bits per pixel),
            ``logbeta``, ``active_units``, and ``kl_dim_XX`` (nats in latent channel XX).
        """
        x = tf.convert_to_tensor(x, tf.float32)
        batch = tf.shape(x)[0]
        if logbeta is None:
            logbeta = self.sample_logbeta(batch, step_seed(seed, rank, step, "beta"))
        if noise is None:
            noise = tf.ones([batch], tf.float32)
        mu_shape = tf.concat([[batch], tf.shape(x)[1:-1] // self.stride, [self.latent_channels]], 0)
        if self.cfg.architecture == "dense":
            mu_shape = tf.stack([batch, self.latent_channels])
        eps = tf.random.stateless_normal(mu_shape, seed=step_seed(seed, rank, step, "noise"))

        terms = self.per_sample_terms(x, logbeta, eps, noise, training=training)
        loss_primary = beta_objective(
            terms["recon"], terms["kl_penalised"], logbeta, self.cfg.beta_ref, self.kl_warmup(step)
        )

        # The σ head is trained where it is used: at the posterior mean (what ``encode`` stores)
        # and the error of the reconstruction from it. On a sampled z it would learn the larger
        # error of a posterior sample and over-predict σ at inference.
        z_var = terms["mu_z"] if self.model_config.nll_to_encoder else tf.stop_gradient(terms["mu_z"])
        log_var = self.decode_var(z_var, logbeta, training=training)
        mean_at_mu = tf.stop_gradient(self.decode_mean(terms["mu_z"], logbeta, training=training))
        nll = losses.gaussian_nll(x, mean_at_mu, log_var)

        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)
        positions = tf.cast(tf.reduce_prod(tf.shape(terms["mu_z"])[1:-1]), tf.float32)
        kl_channel = tf.reduce_sum(
            tf.reshape(terms["kl_values"], [batch, -1, self.latent_channels]), axis=1
        )  # (B, C): nats carried by each latent channel, all positions together
        metrics = {
            "loss_primary": loss_primary,
            "loss_variance": tf.reduce_mean(nll),
            "mse": losses.mse(x, terms["mean"]),
            "nll": nll,
            "recon": terms["recon"],
            "kl": terms["kl"],
            "rate": terms["kl"] / (math.log(2.0) * pixels),
            "logbeta": logbeta,
            "active_units": tf.reduce_sum(tf.cast(kl_channel / positions > ACTIVE_NATS, tf.float32), axis=1),
        }
        for c in range(self.latent_channels):
            metrics[f"kl_dim_{c:02d}"] = kl_channel[:, c]
        return metrics

    # ------------------------------------------------------------------ evaluation
    def rate_distortion_terms(self, x, logbeta, noise=None, seed=0) -> dict:
        """Rate and distortion of each image when operated at the given log β, per sample ``(B,)``.

        The rate is the posterior's KL to the prior (what bits-back / relative-entropy coding of a
        sample z ~ q costs, in nats); the matching distortion is that of the sampled z. The
        reconstruction from the posterior mean (what storing ``encode(x)`` gives) is reported too,
        with the variance decoder's log σ² there (``log_var_mean_z``, where the head is trained).

        Parameters
        ----------
        x
            ``(B, H, W, 1)`` normalized images.
        logbeta
            ``(B,)`` log10 β per image (a constant vector for one point of the RD curve).
        noise
            ``(B,)`` noise σ per image in normalized units; ``None`` means 1.
        seed
            Seeds the posterior sample, so an evaluation is repeatable.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        batch = tf.shape(x)[0]
        noise = tf.ones([batch], tf.float32) if noise is None else tf.convert_to_tensor(noise, tf.float32)
        mu_z, logvar_z = self.posterior(x, logbeta)
        key = tf.random.experimental.stateless_fold_in(tf.constant([0, 0], tf.int64), tf.cast(seed, tf.int64))
        eps = tf.random.stateless_normal(tf.shape(mu_z), seed=key)
        sampled = self.decode_mean(mu_z + tf.exp(0.5 * logvar_z) * eps, logbeta)
        from_mean = self.decode_mean(mu_z, logbeta)
        log_var_mean_z = self.decode_var(mu_z, logbeta)
        kl = kl_per_sample(diag_gaussian_kl(mu_z, logvar_z))
        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float32)

        def mse(recon):
            return tf.reduce_mean(tf.reshape(tf.square(x - recon), [batch, -1]), axis=1)

        mse_sampled = mse(sampled)
        return {
            "kl": kl,
            "rate_bpp": kl / (math.log(2.0) * pixels),
            "mse": mse_sampled,
            "mse_over_noise2": mse_sampled / tf.square(noise),
            "mse_mean_z": mse(from_mean),
            "recon": sampled,
            "recon_mean_z": from_mean,
            "log_var_mean_z": log_var_mean_z,
        }

    # ------------------------------------------------------------------ summaries and export
    def image_logbetas(self) -> list[float]:
        """The log β of TensorBoard image panels: both ends and the middle of the trained range."""
        a, b = self.cfg.logbeta_range
        return [a, 0.5 * (a + b), b]

    def image_predictions(self, x, etas=None) -> dict:
        """``{"logbeta_<v>": (μ, log σ²)}`` from the posterior mean at each of :meth:`image_logbetas`.

        ``etas`` (the tunable AEs' panel settings) is ignored: this model's rate knob is log β.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        out = {}
        for value in self.image_logbetas():
            logbeta = tf.fill([tf.shape(x)[0]], tf.constant(value, tf.float32))
            z = self.encode(x, logbeta)
            out[f"logbeta_{value:+.2f}"] = (self.decode_mean(z, logbeta), self.decode_var(z, logbeta))
        return out

    def coded_rates(self, x, etas=None) -> dict:
        """Nothing during training: a β-VAE's quantization step and tables are chosen per log β on
        training tiles at evaluation (:mod:`fitsae.evaluate.bvae_coding`); TensorBoard shows the KL."""
        return {}

    def inference_module(self, params_yaml: str = "") -> "BVAEInference":
        """The SavedModel-ready inference half (see :class:`BVAEInference`)."""
        return BVAEInference(self, params_yaml)


class BVAEInference(InferenceModule):
    """Encoder and decoders of a trained β-VAE with fixed input signatures, for ``tf.saved_model``.

    Loads with ``tf.saved_model.load`` in plain TensorFlow (no fitsae, no Keras objects):
    ``encode(x, logbeta)`` → posterior mean, ``decode_mean(z, logbeta)`` → μ,
    ``decode_var(z, logbeta)`` → log σ², with x float32 (B, H, W, 1) normalized and logbeta float32
    (B,) log10 β; ``logbeta_range`` says which β the model was trained for. Conv models take any
    H, W divisible by ``stride``.
    """

    def __init__(self, model: BetaVAE, params_yaml: str = ""):
        super().__init__(model, params_yaml, name="fitsae_bvae_inference")
        self.logbeta_range = tf.Variable(list(model.cfg.logbeta_range), trainable=False, dtype=tf.float32)
        if model.cfg.architecture == "dense":
            height, width, channels = model.image_shape
        else:
            height, width, channels = None, None, model.image_shape[-1]
        x_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="x")
        lb_spec = tf.TensorSpec([None], tf.float32, name="logbeta")
        z_spec = tf.TensorSpec([None, *model.latent_shape(height, width)], tf.float32, name="z")
        self.encode = tf.function(lambda x, logbeta: model.encode(x, logbeta), input_signature=[x_spec, lb_spec])
        self.decode_mean = tf.function(lambda z, logbeta: model.decode_mean(z, logbeta),
                                       input_signature=[z_spec, lb_spec])
        self.decode_var = tf.function(lambda z, logbeta: model.decode_var(z, logbeta),
                                      input_signature=[z_spec, lb_spec])


def build_bvae(model_cfg, image_shape=(256, 256, 1)) -> BetaVAE:
    """The β-VAE for ``image_shape``; :func:`fitsae.models.build_model` calls this for ``kind: bvae``."""
    return BetaVAE(model_cfg, image_shape)
