"""Real bits for a β-VAE operating point: its latents quantized, entropy-coded and counted in bytes.

Contract: :func:`fit_operating_points` fixes, for each log β, a per-channel quantization step and
frozen tables (:class:`fitsae.entropy.LatentTables`) from *training* tiles, identically on any
number of ranks; :func:`code_tiles` then codes test tiles with them — the posterior mean
rounded to ``k = round(μ_z / step)``, coded with constriction's ANS — and decodes the mean image
from ``k · step``, what a decoder of the file would show.

The step of channel c is ``s · σ_c``, σ_c the geometric mean of the posterior width of that
channel on the fitting tiles (the precision the decoder was trained to need at this β), and the
scale ``s`` is chosen from :data:`STEP_SCALES` by the model's own objective with the file in
place of the bound: distortion (Gaussian NLL at the data's noise, nats) + β · coded rate (nats)
on the fitting tiles. Why: the KL is a bits-back bound on the rate of a *sample*; a file stores
integers, and what they cost depends on the step, which only the Lagrangian can set fairly for
every β.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from fitsae import distributed
from fitsae.entropy import LatentTables, encode_latents, latent_histograms, tables_from_histograms

__all__ = ["STEP_SCALES", "FIT_TILES", "OperatingPoint", "fit_operating_points", "code_tiles"]

# Multiples of the posterior width tried as quantization steps: uniform rounding noise of step
# √12·σ has the posterior's variance, so the grid brackets it by a factor 4 each way.
STEP_SCALES = (0.25, 0.5, 1.0, 2.0, math.sqrt(12.0), 8.0)
# Training tiles the steps and tables are fitted on: enough for every channel's histogram (a
# 256×256 tile at stride 16 gives 256 values per channel) at a few seconds per log β.
FIT_TILES = 64


@dataclass(frozen=True)
class OperatingPoint:
    """One log β with its quantization: ``tables`` (steps included) and the fit that chose them."""

    logbeta: float
    step_scale: float
    tables: LatentTables
    fit_bits_per_pixel: float
    fit_distortion_nats_per_pixel: float

    def summary(self) -> dict:
        return {
            "step_scale": self.step_scale,
            "steps": [float(v) for v in self.tables.step],
            "fit_bits_per_pixel": self.fit_bits_per_pixel,
            "fit_distortion_nats_per_pixel": self.fit_distortion_nats_per_pixel,
        }


def _half_nll(x: np.ndarray, recon: np.ndarray, noise: np.ndarray) -> float:
    """Σ ½((x − x̂)/σ)² over the tiles (nats; the NLL without its constant, as training minimises)."""
    z = (np.asarray(x, np.float64) - np.asarray(recon, np.float64)) / np.asarray(noise, np.float64).reshape(-1, 1, 1, 1)
    return 0.5 * float(np.sum(np.square(z)))


def fit_operating_points(model, batches: Iterable[dict], logbetas: Sequence[float], crop,
                         scales: Sequence[float] = STEP_SCALES) -> list[OperatingPoint]:
    """Choose each log β's step and fit its tables on training ``batches`` (this rank's share).

    Parameters
    ----------
    model
        A :class:`fitsae.models.bvae.BetaVAE`.
    batches
        Evaluation batches of training tiles (``"x"`` normalized, ``"noise"``).
    logbetas
        The operating points, in the order returned.
    crop
        ``crop(x)``: the part of each tile the model scores (as the test tiles are).
    scales
        Candidate multiples of the posterior widths.

    Returns
    -------
    list of OperatingPoint
        The same on every rank: histograms, rate and distortion sums are reduced over ranks.
    """
    import tensorflow as tf

    tiles = [(crop(np.asarray(b["x"], np.float32)), np.asarray(b["noise"], np.float32).reshape(-1)) for b in batches]
    tiles = [(x, n) for x, n in tiles if len(x)]
    pixels = distributed.allreduce_sum([sum(x.size for x, _ in tiles)])[0]
    if pixels == 0:
        raise ValueError("fit_operating_points: no training tiles on any rank")

    @tf.function(reduce_retracing=True)
    def posterior(x, logbeta):
        return model.posterior(x, logbeta)

    @tf.function(reduce_retracing=True)
    def decode(z, logbeta):
        return model.decode_mean(z, logbeta)

    channels = int(model.latent_channels)
    points = []
    for logbeta in logbetas:
        beta = 10.0 ** float(logbeta) * float(model.model_config.bvae.beta_ref)
        lb = [tf.fill([len(x)], tf.constant(float(logbeta), tf.float32)) for x, _ in tiles]
        mus, log_width = [], np.zeros(channels)
        for (x, _), b in zip(tiles, lb):
            mu, logvar = posterior(tf.constant(x), b)
            mus.append(mu.numpy())
            log_width += 0.5 * logvar.numpy().reshape(-1, channels).sum(axis=0)
        values = distributed.allreduce_sum(np.append(log_width, sum(m.size // channels for m in mus)))
        width = np.exp(values[:channels] / max(values[channels], 1.0))
        best = None
        for scale in scales:
            step = scale * width
            ks = [np.rint(m / step).astype(np.int64) for m in mus]
            hist = _reduced_histograms(ks, channels)
            tables = tables_from_histograms(step, hist)
            sums = np.zeros(2)
            for (x, noise), b, k in zip(tiles, lb, ks):
                sums[0] += tables.ideal_bits(k)
                recon = decode(tf.constant(tables.values(k)), b).numpy()
                sums[1] += _half_nll(x, recon, noise)
            bits, nats = distributed.allreduce_sum(sums)
            objective = nats + beta * math.log(2.0) * bits
            if best is None or objective < best[0]:
                best = (objective, scale, tables, bits / pixels, nats / pixels)
        _, scale, tables, bpp, dist = best
        points.append(OperatingPoint(float(logbeta), float(scale), tables, float(bpp), float(dist)))
    return points


def _reduced_histograms(ks: list[np.ndarray], channels: int) -> np.ndarray:
    """The histograms of every rank's integers, summed (a fixed layout, so they add up)."""
    hist = latent_histograms(np.zeros((0, channels), np.int64))
    for k in ks:
        hist += latent_histograms(k)
    return np.rint(distributed.allreduce_sum(hist)).astype(np.int64)


def code_tiles(model, point: OperatingPoint, x: np.ndarray):
    """Code the tiles ``x`` (B, H, W, 1) at ``point``: (decoded mean, coded bytes per tile, ideal bits per tile).

    The mean image is decoded from the dequantized integers, exactly what decoding the bytes gives.
    """
    import tensorflow as tf

    logbeta = tf.fill([len(x)], tf.constant(point.logbeta, tf.float32))
    mu = model.encode(tf.constant(x), logbeta).numpy()
    k = point.tables.symbols(mu)
    per_tile = k.reshape(len(x), -1, k.shape[-1])
    coded = [len(encode_latents(point.tables, tile)[0]) for tile in per_tile]
    estimated = [point.tables.ideal_bits(tile) for tile in per_tile]
    recon = model.decode_mean(tf.constant(point.tables.values(k)), logbeta).numpy()
    return recon, coded, estimated
