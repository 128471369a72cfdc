"""Reconstruction and calibration metrics as exact sums and counts.

Every metric here is kept as float64 sums and integer-valued counts rather than running means,
for two reasons. First, under ``mpirun`` each rank scores its own shard of tiles, and the global
value must be ``sum / count`` over all pixels of all ranks: a mean of per-rank means would weigh
a short last shard like a full one. Second, sums can be reduced with one
:func:`fitsae.distributed.allreduce_sum` call for the whole evaluation (all η, all methods), so
the communication cost does not grow with the number of settings scored.

Units (stated in the report):

- ``mse`` is in physical units² (the FITS pixel units after BSCALE/BZERO), pooled over pixels.
- ``rmse_over_noise`` is ``sqrt(mean(((x - x̂) / σ_noise)²))`` with σ_noise the per-tile noise in
  physical units, so 1.0 means "errors as large as the sky noise".
- ``psnr`` is ``10 log10(peak² / mse)`` with ``peak`` the physical range (max − min) of all
  evaluated pixels, reduced over ranks; the report states the peak value.
- ``nll`` is the Gaussian negative log-likelihood per pixel in nats, *in normalized units*
  (noise ≈ 1), including the ``½ log 2π`` constant, so it is comparable across data sets.
- ``sigma_z_std`` is the standard deviation of ``z = (x − μ) / σ`` (normalized units); 1 means the
  variance decoder's σ is calibrated. ``coverage_1sigma``/``coverage_2sigma`` are the fractions
  of pixels with ``|z| < 1`` and ``|z| < 2`` (0.683 and 0.954 for a calibrated Gaussian).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fitsae import distributed

__all__ = [
    "Z_BIN_EDGES",
    "BAND_EDGES",
    "BandSums",
    "ErrorSums",
    "GaussianSums",
    "CodecSums",
    "PairedChangeSums",
    "KeptSums",
    "RateSums",
    "tile_error_over_noise",
    "MetricBook",
    "DataRange",
    "psnr",
]

# Fixed bin edges so every rank (and every run) histograms z identically and the counts can be
# summed exactly; outside ±6σ goes to the under/overflow bins.
Z_BIN_EDGES = np.linspace(-6.0, 6.0, 49)
_LOG_2PI = math.log(2.0 * math.pi)

# Brightness bands for :class:`BandSums`: the true pixel's signal-to-noise (x − background)/σ_noise.
# Fixed, so bands mean the same on every rank and in every report.
BAND_EDGES = (3.0, 10.0, 30.0, 100.0, 300.0)


def psnr(mse: float, peak: float) -> float:
    """``10 log10(peak² / mse)`` in dB; ``inf`` for a perfect reconstruction."""
    if mse <= 0.0:
        return math.inf
    if peak <= 0.0:
        return math.nan
    return 10.0 * math.log10(peak * peak / mse)


def tile_error_over_noise(x_phys: np.ndarray, recon_phys: np.ndarray, noise_phys: np.ndarray) -> np.ndarray:
    """Each tile's ``mean(((x − x̂) / σ_noise)²)`` over its pixels, shape (B,)."""
    err2 = (np.asarray(x_phys, dtype=np.float64) - np.asarray(recon_phys, dtype=np.float64)) ** 2
    noise = np.asarray(noise_phys, dtype=np.float64).reshape(-1)
    return err2.reshape(err2.shape[0], -1).mean(axis=1) / noise**2


@dataclass
class ErrorSums:
    """Squared-error sums for one reconstruction method at one setting (any method: AE, PCA, fpack)."""

    n: float = 0.0
    sse: float = 0.0  # physical units²
    sse_over_noise: float = 0.0  # Σ ((x − x̂) / σ_noise)²

    def update(self, x_phys: np.ndarray, recon_phys: np.ndarray, noise_phys: np.ndarray) -> None:
        """Add a batch.

        Parameters
        ----------
        x_phys, recon_phys : array (B, ...)
            Original and reconstructed tiles in physical units.
        noise_phys : array (B,)
            Each tile's noise σ in physical units.
        """
        x = np.asarray(x_phys, dtype=np.float64)
        r = np.asarray(recon_phys, dtype=np.float64)
        err2 = (x - r) ** 2
        per_tile = err2.reshape(err2.shape[0], -1).sum(axis=1)
        noise = np.asarray(noise_phys, dtype=np.float64).reshape(-1)
        self.n += float(err2.size)
        self.sse += float(per_tile.sum())
        self.sse_over_noise += float((per_tile / noise**2).sum())

    def vector(self) -> np.ndarray:
        return np.array([self.n, self.sse, self.sse_over_noise], dtype=np.float64)

    def load(self, values: np.ndarray) -> None:
        self.n, self.sse, self.sse_over_noise = (float(v) for v in values)

    def summary(self, peak: float) -> dict:
        """``mse``, ``rmse_over_noise``, ``psnr`` (+ the pixel count) from the (reduced) sums."""
        if self.n == 0:
            return {"mse": math.nan, "rmse_over_noise": math.nan, "psnr": math.nan, "n_pixels": 0}
        mse = self.sse / self.n
        return {
            "mse": mse,
            "rmse_over_noise": math.sqrt(self.sse_over_noise / self.n),
            "psnr": psnr(mse, peak),
            "n_pixels": int(self.n),
        }


@dataclass
class CodecSums(ErrorSums):
    """Error sums plus the bytes a real codec (fpack) spent, for bits per pixel."""

    payload_bytes: float = 0.0
    overhead_bytes: float = 0.0
    n_tiles: float = 0.0

    def add_bytes(self, payload: int, overhead: int) -> None:
        self.payload_bytes += payload
        self.overhead_bytes += overhead
        self.n_tiles += 1

    def vector(self) -> np.ndarray:
        extra = [self.payload_bytes, self.overhead_bytes, self.n_tiles]
        return np.concatenate([super().vector(), np.array(extra, dtype=np.float64)])

    def load(self, values: np.ndarray) -> None:
        super().load(values[:3])
        self.payload_bytes, self.overhead_bytes, self.n_tiles = (float(v) for v in values[3:6])

    def summary(self, peak: float) -> dict:
        out = super().summary(peak)
        bpp = 8.0 * self.payload_bytes / self.n if self.n else float("nan")
        out.update(
            bits_per_pixel=bpp,
            overhead_bits_per_pixel=8.0 * self.overhead_bytes / self.n if self.n else float("nan"),
            compression_ratio=32.0 / bpp if bpp > 0 else float("nan"),
            n_tiles=int(self.n_tiles),
        )
        return out


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

    def update(
        self,
        x_norm: np.ndarray,
        mu_norm: np.ndarray,
        log_var_norm: np.ndarray,
        x_phys: np.ndarray,
        mu_phys: np.ndarray,
        noise_phys: np.ndarray,
    ) -> None:
        """Add a batch: errors in physical units, likelihood and calibration in normalized units.

        The likelihood is computed where the model made it (normalized units) so that it does not
        depend on the arbitrary physical scale of each file.
        """
        self.errors.update(x_phys, mu_phys, noise_phys)
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

    def vector(self) -> np.ndarray:
        head = [self.n, self.nll_sum, self.z_sum, self.z2_sum, self.within_1, self.within_2]
        return np.concatenate([self.errors.vector(), np.array(head), self.z_hist])

    def load(self, values: np.ndarray) -> None:
        self.errors.load(values[:3])
        self.n, self.nll_sum, self.z_sum, self.z2_sum, self.within_1, self.within_2 = (
            float(v) for v in values[3:9]
        )
        self.z_hist = np.array(values[9:], dtype=np.float64)

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
        return out


@dataclass
class PairedChangeSums:
    """How the error changes between two settings (η → η′) scored on the same tiles, tile by tile.

    The pooled error is dominated by a few bright sources, so a small rise from η to η′ may come
    from one galaxy reconstructed a little worse. Pairing the two settings on each tile and
    comparing the mean change with its standard error (tile-to-tile scatter / √n) says whether a
    rise is larger than that. Values are per-tile ``mean(((x − x̂)/σ_noise)²)``; every tile has the
    same pixel count, so ``mean_change`` is exactly the change of the pooled ``rmse_over_noise²``.
    """

    n: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    def update(self, before: np.ndarray, after: np.ndarray) -> None:
        """Add per-tile errors (:func:`tile_error_over_noise`) of the same tiles at both settings."""
        d = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
        self.n += float(d.size)
        self.total += float(d.sum())
        self.total_sq += float((d * d).sum())

    def vector(self) -> np.ndarray:
        return np.array([self.n, self.total, self.total_sq], dtype=np.float64)

    def load(self, values: np.ndarray) -> None:
        self.n, self.total, self.total_sq = (float(v) for v in values)

    def summary(self) -> dict:
        """``n_tiles``, ``mean_change`` and its ``standard_error`` (``nan`` with fewer than 2 tiles)."""
        if self.n == 0:
            return {"n_tiles": 0, "mean_change": math.nan, "standard_error": math.nan}
        mean = self.total / self.n
        if self.n < 2:
            se = math.nan
        else:
            var = max(self.total_sq - self.n * mean * mean, 0.0) / (self.n - 1)
            se = math.sqrt(var / self.n)
        return {"n_tiles": int(self.n), "mean_change": mean, "standard_error": se}


@dataclass
class BandSums:
    """Squared error in noise units split by how bright the true pixel is.

    On sky images the pooled error is ruled by a handful of pixels: on the demo's GalSim fields
    the 0.02 % of pixels above 300σ (a dozen star cores per 256×256 tile) carry 30–50 % of an AE's
    squared error, while the faint pixels that hold most of the science barely move it. Splitting
    the sums by the true pixel's signal-to-noise (x − background)/σ_noise, with the fixed
    ``BAND_EDGES``, shows where a method loses and whether each band's error falls with η.
    """

    n: np.ndarray = field(default_factory=lambda: np.zeros(len(BAND_EDGES) + 1))
    sse_over_noise: np.ndarray = field(default_factory=lambda: np.zeros(len(BAND_EDGES) + 1))

    def update(self, x_phys: np.ndarray, recon_phys: np.ndarray, background_phys: np.ndarray,
               noise_phys: np.ndarray) -> None:
        """Add a batch.

        Parameters
        ----------
        x_phys, recon_phys : array (B, ...)
            Original and reconstructed tiles in physical units.
        background_phys, noise_phys : array (B,)
            Each tile's background level and noise σ in physical units.
        """
        x = np.asarray(x_phys, dtype=np.float64)
        shape = (-1,) + (1,) * (x.ndim - 1)
        noise = np.asarray(noise_phys, dtype=np.float64).reshape(shape)
        snr = (x - np.asarray(background_phys, dtype=np.float64).reshape(shape)) / noise
        err2 = ((x - np.asarray(recon_phys, dtype=np.float64)) / noise) ** 2
        band = np.digitize(snr, BAND_EDGES).ravel()
        size = len(BAND_EDGES) + 1
        self.n += np.bincount(band, minlength=size)
        self.sse_over_noise += np.bincount(band, weights=err2.ravel(), minlength=size)

    def vector(self) -> np.ndarray:
        return np.concatenate([self.n, self.sse_over_noise])

    def load(self, values: np.ndarray) -> None:
        size = len(BAND_EDGES) + 1
        self.n = np.array(values[:size], dtype=np.float64)
        self.sse_over_noise = np.array(values[size:2 * size], dtype=np.float64)

    def summary(self) -> list[dict]:
        """One entry per band: ``snr_low``/``snr_high`` (None = unbounded), ``pixel_fraction``,
        ``rmse_over_noise`` within the band (None if empty) and ``share_of_error``, the band's
        part of the pooled squared error."""
        total_n, total_err = float(self.n.sum()), float(self.sse_over_noise.sum())
        lows, highs = (None, *BAND_EDGES), (*BAND_EDGES, None)
        return [
            {"snr_low": lo, "snr_high": hi,
             "pixel_fraction": float(n) / total_n if total_n else math.nan,
             "rmse_over_noise": math.sqrt(e / n) if n else None,
             "share_of_error": float(e) / total_err if total_err else math.nan}
            for lo, hi, n, e in zip(lows, highs, self.n, self.sse_over_noise)
        ]


@dataclass
class KeptSums:
    """How many latent channels the budget left each tile (:mod:`fitsae.budget`), as counts.

    ``size`` is the largest η′ possible (the model's channels); counts per η′ = 1..size sum
    exactly over ranks.
    """

    size: int = 1
    counts: np.ndarray = None

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros(self.size, dtype=np.float64)

    def update(self, kept: np.ndarray) -> None:
        """Add the η′ (1-based) chosen for each tile of a batch."""
        self.counts += np.bincount(np.asarray(kept, dtype=np.int64).ravel() - 1, minlength=self.size)[: self.size]

    def vector(self) -> np.ndarray:
        return self.counts.copy()

    def load(self, values: np.ndarray) -> None:
        self.counts = np.array(values, dtype=np.float64)

    def summary(self) -> dict:
        """``mean_eta_kept`` and ``tiles_by_eta_kept`` (η′ → tiles, only η′ that occurred)."""
        total = float(self.counts.sum())
        mean = float(np.dot(np.arange(1, self.size + 1), self.counts) / total) if total else math.nan
        return {"mean_eta_kept": mean,
                "tiles_by_eta_kept": {str(i + 1): int(c) for i, c in enumerate(self.counts) if c}}


@dataclass
class RateSums:
    """Coded bytes of a learned codec (real bytes) beside the bits its tables predicted."""

    payload_bytes: float = 0.0
    estimated_bits: float = 0.0
    pixels: float = 0.0

    def update(self, payload_bytes: int, estimated_bits: float, pixels: int) -> None:
        self.payload_bytes += payload_bytes
        self.estimated_bits += estimated_bits
        self.pixels += pixels

    def vector(self) -> np.ndarray:
        return np.array([self.payload_bytes, self.estimated_bits, self.pixels], dtype=np.float64)

    def load(self, values: np.ndarray) -> None:
        self.payload_bytes, self.estimated_bits, self.pixels = (float(v) for v in values)

    def summary(self) -> dict:
        """``bits_per_pixel_coded`` (8 × coded bytes / pixels), ``bits_per_pixel_estimated``
        (−Σ log₂ P under the frozen tables / pixels) and their ratio."""
        if not self.pixels:
            return {"bits_per_pixel_coded": math.nan, "bits_per_pixel_estimated": math.nan,
                    "estimated_over_coded": math.nan}
        coded = 8.0 * self.payload_bytes / self.pixels
        estimated = self.estimated_bits / self.pixels
        return {"bits_per_pixel_coded": coded, "bits_per_pixel_estimated": estimated,
                "estimated_over_coded": estimated / coded if coded else math.nan}


class MetricBook:
    """Named accumulators reduced over ranks in one exact allreduce.

    Keys are any hashable labels (``("ae", 3)``, ``("fpack", "RICE_1", 4)``). Every rank must create
    the same keys in the same order — the runner does so by creating them all before the first
    batch — because the reduction concatenates the sums in key order.
    """

    def __init__(self) -> None:
        self._entries: dict = {}

    def errors(self, key) -> ErrorSums:
        return self._entries.setdefault(key, ErrorSums())

    def codec(self, key) -> CodecSums:
        return self._entries.setdefault(key, CodecSums())

    def gaussian(self, key) -> GaussianSums:
        return self._entries.setdefault(key, GaussianSums())

    def paired(self, key) -> PairedChangeSums:
        return self._entries.setdefault(key, PairedChangeSums())

    def bands(self, key) -> BandSums:
        return self._entries.setdefault(key, BandSums())

    def kept(self, key, size: int) -> KeptSums:
        return self._entries.setdefault(key, KeptSums(size))

    def rate(self, key) -> RateSums:
        return self._entries.setdefault(key, RateSums())

    def __getitem__(self, key):
        return self._entries[key]

    def __contains__(self, key) -> bool:
        return key in self._entries

    def keys(self) -> list:
        return list(self._entries)

    def reduce(self) -> None:
        """Replace every rank's local sums with the sums over all ranks (exact float64)."""
        entries = list(self._entries.values())
        if not entries:
            return
        vectors = [e.vector() for e in entries]
        total = distributed.allreduce_sum(np.concatenate(vectors))
        start = 0
        for entry, vec in zip(entries, vectors):
            entry.load(total[start:start + len(vec)])
            start += len(vec)


@dataclass
class DataRange:
    """Running min/max of physical pixel values; the PSNR peak is the reduced ``max − min``."""

    lo: float = math.inf
    hi: float = -math.inf

    def update(self, x_phys: np.ndarray) -> None:
        x = np.asarray(x_phys)
        if x.size:
            self.lo = min(self.lo, float(np.min(x)))
            self.hi = max(self.hi, float(np.max(x)))

    def reduce(self) -> None:
        self.hi = distributed.allreduce_max(self.hi)
        self.lo = -distributed.allreduce_max(-self.lo)

    @property
    def peak(self) -> float:
        return self.hi - self.lo if self.hi >= self.lo else math.nan
