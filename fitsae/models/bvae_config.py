"""Configuration of the β-VAE (``model.bvae:`` section).

Kept apart from :mod:`fitsae.models.bvae` so that reading and validating a config never imports
TensorFlow; :mod:`fitsae.models.config` nests :class:`BVAEConfig` under ``model.bvae``.

Only what is specific to the β-VAE lives here (which architecture, the log β range, β_r, KL warm-up,
free bits); layer sizes are shared with the tunable AEs in the ``model:`` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BVAEConfig"]


@dataclass
class BVAEConfig:
    """β-VAE hyper-parameters that the tunable AEs do not have.

    The layer sizes are the ``model:`` section's own (``latent_channels``, ``hidden`` for the dense
    architecture, ``filters``/``strides``/``kernel_size``/``blocks_per_stage`` for the conv one,
    ``activation``, ``logvar_min``/``logvar_max``, ``nll_to_encoder``), so one key means one thing
    whatever the model kind.

    Attributes
    ----------
    architecture
        ``"dense"`` flattens small images (8×8 digits, 16×16 toys) into an MLP with a vector latent of
        ``latent_channels`` values; ``"conv"`` is fully convolutional with a latent of
        rows × cols × ``latent_channels``, for 256×256 tiles.
    logbeta_range
        ``(a, b)``: log10 β is drawn per sample from U(a, b) during training. β = 1 (log β = 0) is the
        ELBO because the reconstruction term is the Gaussian NLL at the data's noise σ.
    beta_ref
        β_r, a fixed reference multiplier: the KL weight is β_r · 10**logβ.
    kl_warmup_steps
        Linearly ramp the KL weight from 0 to 1 over this many steps (0: off). Avoids posterior
        collapse before the decoder has learned anything.
    free_bits
        Nats per latent value under which the KL is not penalised (Kingma et al. 2016; 0: off).
        Applied per sample, so it cannot mix samples with different β.
    conditioning_units
        Width of the small MLP that embeds log β before it modulates every hidden layer (FiLM).
    """

    architecture: Literal["dense", "conv"] = "conv"
    logbeta_range: tuple[float, float] = (-3.0, 1.0)
    beta_ref: float = 1.0
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    conditioning_units: int = 32

    def __post_init__(self) -> None:
        a, b = self.logbeta_range
        if not a < b:
            raise ValueError(f"bvae.logbeta_range must be (low, high) with low < high, got {self.logbeta_range}")
        if self.beta_ref <= 0:
            raise ValueError(f"bvae.beta_ref must be > 0, got {self.beta_ref}")
        if self.kl_warmup_steps < 0 or self.free_bits < 0:
            raise ValueError("bvae.kl_warmup_steps and bvae.free_bits must be >= 0")
        if self.conditioning_units < 1:
            raise ValueError(f"bvae.conditioning_units must be >= 1, got {self.conditioning_units}")
