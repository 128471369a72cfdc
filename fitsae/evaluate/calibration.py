"""Calibration of the variance decoder as exact sums: NLL, the spread of z = (x − μ)/σ, coverage.

Contract: :class:`GaussianSums` holds a (μ, log σ²) prediction's error sums
(:class:`~fitsae.evaluate.error_sums.ErrorSums`) plus the sums for

- ``nll``: the Gaussian negative log-likelihood per pixel in nats, *in normalized units* (noise ≈ 1),
  including the ``½ log 2π`` constant, so it is comparable across data sets;
- ``sigma_z_std``: the standard deviation of ``z = (x − μ) / σ`` (normalized units); 1 means the
  variance decoder's σ is calibrated. ``coverage_1sigma``/``coverage_2sigma`` are the fractions
  of pixels with ``|z| < 1`` and ``|z| < 2`` (0.683 and 0.954 for a calibrated Gaussian).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fitsae.evaluate.error_sums import ErrorSums

__all__ = ["Z_BIN_EDGES", "GaussianSums", "physical_z"]

# Fixed bin edges so every rank (and every run) histograms z identically and the counts can be
# summed exactly; outside ±6σ goes to the under/overflow bins.
Z_BIN_EDGES = np.linspace(-6.0, 6.0, 49)
_LOG_2PI = math.log(2.0 * math.pi)


def physical_z(x_phys, mu_phys, sigma_phys) -> np.ndarray:
    """z = (x − μ)/σ in physical units, float64, 0 where σ = 0: σ is 0 only where a tile's range
    is one value (:func:`fitsae.data.normalize.decoded_sigma`), and there the error is 0 too."""
    error = np.asarray(x_phys, np.float64) - np.asarray(mu_phys, np.float64)
    sigma = np.broadcast_to(np.asarray(sigma_phys, np.float64), error.shape)
    return np.divide(error, sigma, out=np.zeros_like(error), where=sigma > 0)


@dataclass
class GaussianSums:
    """Error sums plus the sums needed for NLL and σ calibration of a (μ, log σ²) prediction."""

    errors: ErrorSums = field(default_factory=ErrorSums)
    n: float = 0.0
    nll_sum: float = 0.0
    z_sum: float = 0.0
    z2_sum: float = 0.0
    within_1: float = 0.0
    within_2: float = 0.0
    z_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(Z_BIN_EDGES) + 1))
    # (n, Σz, Σz², #|z|<1, #|z|<2) of z = (x − μ)/σ in physical units, σ propagated through the stretch
    physical: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def update(
        self,
        x_norm: np.ndarray,
        mu_norm: np.ndarray,
        log_var_norm: np.ndarray,
        x_phys: np.ndarray,
        mu_phys: np.ndarray,
        noise_phys: np.ndarray,
        truth_phys: np.ndarray | None = None,
        sigma_phys: np.ndarray | None = None,
    ) -> None:
        """Add a batch: errors in physical units, likelihood and calibration in normalized units.

        The likelihood is computed where the model made it (normalized units) so that it does not
        depend on the arbitrary physical scale of each file. ``truth_phys`` as in
        :meth:`ErrorSums.update`. With ``sigma_phys`` (σ in physical units, as ``fitsae decompress
        --sigma`` writes it), the calibration is also kept in physical units, where a stretch such
        as asinh makes it differ from the normalized one on bright pixels.
        """
        self.errors.update(x_phys, mu_phys, noise_phys, truth_phys)
        x = np.asarray(x_norm, dtype=np.float64)
        mu = np.asarray(mu_norm, dtype=np.float64)
        s = np.asarray(log_var_norm, dtype=np.float64)
        r2 = (x - mu) ** 2
        z = (x - mu) * np.exp(-0.5 * s)
        self.n += float(x.size)
        self.nll_sum += float((0.5 * (s + r2 * np.exp(-s) + _LOG_2PI)).sum())
        self.z_sum += float(z.sum())
        self.z2_sum += float((z * z).sum())
        az = np.abs(z)
        self.within_1 += float((az < 1.0).sum())
        self.within_2 += float((az < 2.0).sum())
        # digitize puts z < edges[0] in bin 0 and z >= edges[-1] in the last bin: under/overflow.
        self.z_hist += np.bincount(np.digitize(z.ravel(), Z_BIN_EDGES), minlength=len(Z_BIN_EDGES) + 1)
        if sigma_phys is not None:
            zp = physical_z(x_phys, mu_phys, sigma_phys)
            azp = np.abs(zp)
            self.physical += [zp.size, zp.sum(), (zp * zp).sum(), (azp < 1.0).sum(), (azp < 2.0).sum()]

    def vector(self) -> np.ndarray:
        head = [self.n, self.nll_sum, self.z_sum, self.z2_sum, self.within_1, self.within_2]
        return np.concatenate([self.errors.vector(), np.array(head), self.physical, self.z_hist])

    def load(self, values: np.ndarray) -> None:
        width = len(self.errors.vector())
        self.errors.load(values[:width])
        self.n, self.nll_sum, self.z_sum, self.z2_sum, self.within_1, self.within_2 = (
            float(v) for v in values[width:width + 6]
        )
        self.physical = np.array(values[width + 6:width + 11], dtype=np.float64)
        self.z_hist = np.array(values[width + 11:], dtype=np.float64)

    def maxima(self) -> np.ndarray:
        return self.errors.maxima()

    def load_maxima(self, values: np.ndarray) -> None:
        self.errors.load_maxima(values)

    def summary(self, peak: float) -> dict:
        out = self.errors.summary(peak)
        if self.n == 0:
            out.update(nll=math.nan, sigma_z_mean=math.nan, sigma_z_std=math.nan,
                       coverage_1sigma=math.nan, coverage_2sigma=math.nan, z_hist=[])
            return out
        z_mean = self.z_sum / self.n
        out.update(
            nll=self.nll_sum / self.n,
            sigma_z_mean=z_mean,
            sigma_z_std=math.sqrt(max(self.z2_sum / self.n - z_mean * z_mean, 0.0)),
            coverage_1sigma=self.within_1 / self.n,
            coverage_2sigma=self.within_2 / self.n,
            z_hist=[int(c) for c in self.z_hist],
        )
        n, z_sum, z2_sum, within_1, within_2 = (float(v) for v in self.physical)
        if n:
            mean = z_sum / n
            out.update(sigma_z_std_physical=math.sqrt(max(z2_sum / n - mean * mean, 0.0)),
                       coverage_1sigma_physical=within_1 / n, coverage_2sigma_physical=within_2 / n)
        return out

