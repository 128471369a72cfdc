"""The ``model:`` section of an experiment config (:class:`ModelConfig`).

Architecture of a model and how its rate η is drawn; the dataclass is the single place its
defaults and allowed values live. Kept free of TensorFlow imports so that reading, validating
and printing a config is instant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

from fitsae.models.bvae_config import BVAEConfig

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig:
    """Architecture of a tunable dual-decoder autoencoder and how its rate η is drawn.

    Attributes
    ----------
    kind : {"dense", "conv", "bvae"}
        ``dense``: the image is flattened and the latent is a vector of ``latent_channels`` units
        (needs a fixed image size). ``conv``: fully convolutional; the latent is
        (H/stride, W/stride, latent_channels), so one model compresses crops and whole mosaics.
        ``bvae``: the β-VAE of ``fitsae.models.bvae``.
    latent_channels : int
        C: dense latent units or convolutional latent channels. η masks all but the first η.
    hidden : list of int
        Dense only: widths of the hidden layers of the encoder (decoders mirror them). Empty
        with ``activation: linear`` is the linear autoencoder that should find the PCA subspace.
    filters : list of int
        Conv only: width of each down-sampling stage of the encoder (decoders mirror them).
    strides : list of int
        Conv only: stride of each stage; the total stride is their product and image sides must
        be divisible by it. Defaults to 2 per stage.
    kernel_size : int
        Conv only: kernel of every convolution.
    upsample : {"transpose", "resize"}
        Conv only: how the decoders up-sample. ``transpose``: a strided transposed convolution;
        with a kernel not divisible by the stride its taps overlap unevenly, so μ and σ carry a
        grid at the stride period. ``resize``: nearest-neighbour resize then a convolution,
        which treats every output phase alike (Odena et al. 2016, "Deconvolution and
        checkerboard artifacts"). The default stays ``transpose`` because a run's params.yaml
        written before this key existed must rebuild the model it trained; new configs say
        ``resize``.
    blocks_per_stage : int
        Conv only: extra stride-1 convolutions after each down/up-sampling convolution (depth).
    activation : str
        Activation of hidden layers (any Keras name). Output heads are always linear (μ) and
        clamped-linear (log σ²): the seed notebooks' ReLU heads could not represent negative
        residuals and floored the error.
    logvar_min, logvar_max : float
        Soft bounds of the log-variance head in normalized units (noise ≈ 1 means log σ² ≈ 0).
        They keep exp(-s) finite while the variance decoder is still untrained.
    eta_distribution : {"uniform", "geometric", "log_uniform_ratio"}
        How training draws η ∈ [eta_min, C]: uniform; geometric as in nested dropout (Rippel et
        al. 2014), P(η=k) ∝ p(1-p)^(k-1); or log-uniform in the compression ratio (equivalently in
        η), which spends more steps at high compression.
    eta_geometric_p : float
        p of the geometric distribution (mean ≈ 1/p kept units).
    eta_min : int
        Smallest η drawn in training.
    eta_per : {"batch", "example"}
        One η per worker batch (default; every rank draws its own) or one per example.
    nll_to_encoder : bool
        If true, the variance decoder's NLL also trains the encoder (optimizer 2 then updates the
        encoder too). Default false: z and μ are held fixed (``tf.stop_gradient``) so the variance
        head cannot trade reconstruction quality for a better-calibrated σ.
    rate_lambda : float, optional
        λ of the rate–distortion loss λ·D + R of optimizer 1 (D: the MSE in normalized units,
        R: bits per pixel of the kept latent channels under the learned prior,
        :mod:`fitsae.models.prior`). Unset (the default, and every run trained before the
        codec): no prior and no rate term, the loss is the MSE alone; the codec then fits a prior
        to the model's latents when it freezes the model. Larger λ buys lower error with more bits.
    rate_lambda_eta_power : float
        p in λ(η) = λ·(η/C)^p: one λ for every η at p = 0; p > 0 weighs distortion less at small
        η, where the mask already bounds the rate (SlimCAE, arXiv 2103.15726, found one λ for
        every width not enough).
    rate_decoder_input : {"round", "noise"}
        What the mean decoder sees in training when ``rate_lambda`` is set: the rounded latent
        with a straight-through gradient (what it will decode from the file), or the latent plus
        the same uniform noise the rate is measured on (Ballé et al. 2017).
    distortion_weight_softening : float, optional
        Weigh each pixel's squared error (normalized units) by w = cosh(x/s), x the normalized
        target, normalized per example by the mean w; unset (default): plain MSE. With s the
        data's ``asinh_softening`` this is the squared error in physical noise units divided by a
        variance that grows with the flux as Poisson noise does (a 300σ core: w ≈ 30 where the
        physical error would weigh it ≈ 900 and the stretch 1), so bright cores get their due
        without the faint sky losing all of it. The weight comes from the noisy target, so pixels
        the noise pushed up weigh more and fluxes come out high (README, photometry); no shipped
        config uses it.
    flux_weight : float, optional
        Adds ``flux_weight`` × the windowed flux error (:func:`fitsae.losses.window_flux_error`)
        to the distortion of optimizer 1; unset (default): none. For conv and dense models.
    flux_window : int
        Side of the windows whose summed flux that term compares, pixels.
    bvae : BVAEConfig
        ``kind: bvae`` only: architecture (dense/conv), log β range, β_r, KL warm-up, free bits
        (see ``fitsae.models.bvae_config``).
    """

    kind: Literal["dense", "conv", "bvae"] = "conv"
    latent_channels: int = 8
    hidden: list[int] = field(default_factory=list)
    filters: list[int] = field(default_factory=lambda: [32, 64])
    strides: list[int] = field(default_factory=list)
    kernel_size: int = 3
    upsample: Literal["transpose", "resize"] = "transpose"
    blocks_per_stage: int = 0
    activation: str = "gelu"
    logvar_min: float = -10.0
    logvar_max: float = 10.0
    eta_distribution: Literal["uniform", "geometric", "log_uniform_ratio"] = "uniform"
    eta_geometric_p: float = 0.2
    eta_min: int = 1
    eta_per: Literal["batch", "example"] = "batch"
    nll_to_encoder: bool = False
    rate_lambda: Optional[float] = None
    rate_lambda_eta_power: float = 0.0
    rate_decoder_input: Literal["round", "noise"] = "round"
    distortion_weight_softening: Optional[float] = None
    flux_weight: Optional[float] = None
    flux_window: int = 8
    bvae: BVAEConfig = field(default_factory=BVAEConfig)

    def __post_init__(self):
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {self.latent_channels}")
        if not 1 <= self.eta_min <= self.latent_channels:
            raise ValueError(f"eta_min must be in 1..latent_channels={self.latent_channels}, got {self.eta_min}")
        if not 0.0 < self.eta_geometric_p < 1.0:
            raise ValueError(f"eta_geometric_p must be in (0, 1), got {self.eta_geometric_p}")
        if self.logvar_min >= self.logvar_max:
            raise ValueError(f"logvar_min ({self.logvar_min}) must be below logvar_max ({self.logvar_max})")
        if self.kind == "conv":
            if not self.filters:
                raise ValueError("a conv model needs at least one stage in filters")
            if self.strides and len(self.strides) != len(self.filters):
                raise ValueError(f"strides {self.strides} must have one entry per stage of filters {self.filters}")
            if any(s < 1 for s in self.strides):
                raise ValueError(f"strides must be >= 1, got {self.strides}")
        if self.rate_lambda is not None and not self.rate_lambda > 0:
            raise ValueError(f"rate_lambda must be positive (or unset for no rate term), got {self.rate_lambda}")
        if self.distortion_weight_softening is not None and not self.distortion_weight_softening > 0:
            raise ValueError(f"distortion_weight_softening must be positive (or unset), got "
                             f"{self.distortion_weight_softening}")
        if self.flux_weight is not None and not self.flux_weight > 0:
            raise ValueError(f"flux_weight must be positive (or unset), got {self.flux_weight}")
        if self.flux_weight is not None and self.kind == "bvae":
            raise ValueError("flux_weight is for the tunable models (dense, conv); the β-VAE has no flux term")
        if self.flux_window < 1:
            raise ValueError(f"flux_window must be >= 1, got {self.flux_window}")
        if any(w < 1 for w in self.hidden + self.filters):
            raise ValueError("layer widths in hidden/filters must be >= 1")

    @property
    def stage_strides(self) -> list[int]:
        """Per-stage strides of the conv model (2 per stage unless ``strides`` says otherwise)."""
        return list(self.strides) if self.strides else [2] * len(self.filters)

    @property
    def architecture(self) -> str:
        """``"dense"`` (one latent vector per image of a fixed size) or ``"conv"`` (a latent map).

        Read from ``kind`` (and ``bvae.architecture`` for a β-VAE): configs and checkpoints name
        the model by ``kind``, so the axis is derived rather than a second key that could disagree.
        """
        return self.bvae.architecture if self.kind == "bvae" else self.kind

    @property
    def rate_mechanism(self) -> str:
        """``"mask"`` (keep the first η latent channels) or ``"beta"`` (condition on log β)."""
        return "beta" if self.kind == "bvae" else "mask"

    @property
    def builds_any_size(self) -> bool:
        """Whether the model is built size-agnostic, (None, None, 1): the masked conv AE, so that a
        model trained on crops encodes whole tiles. Dense models and the β-VAE are built for the
        training size (the conv β-VAE still accepts other multiples of its stride)."""
        return self.rate_mechanism == "mask" and self.architecture == "conv"

    @property
    def total_stride(self) -> int:
        """Factor by which a convolutional architecture (masked or β) shrinks each image side; 1 for dense."""
        return math.prod(self.stage_strides) if self.architecture == "conv" else 1
