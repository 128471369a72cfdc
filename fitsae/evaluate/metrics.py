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
- The error is ``e = x̂ − x`` (reconstruction minus reference; a positive mean means too bright):
  ``mean_error`` (physical) and ``mean_error_over_noise`` are its mean, ``max_abs_error`` and
  ``max_abs_error_over_noise`` its ℓ∞ norm, ``median_abs_error_over_noise`` and
  ``p99_abs_error_over_noise`` robust figures of |e|/σ_noise (what the typical pixel and the worst
  1 % see, where one artifact pixel can rule the pooled RMSE). The quantiles are read from a fixed
  histogram (``ABS_ERROR_EDGES``, 50 bins per decade, so sums stay exact over ranks): within one
  bin, 4.7 %, of the exact value; exact zeros are counted apart, so a lossless method reads 0.
- Every one of these is computed twice where the data allow: against the noisy input ``x`` and,
  with the suffix ``_truth``, against the noiseless truth that simulations write (``TRUTH``
  planes). A method that removes noise is penalised by the first and rewarded by the second;
  without truth the ``_truth`` figures are ``None`` (null in JSON).
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
    "ABS_ERROR_EDGES",
    "hist_quantile",
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
# Fixed, so bands mean the same on every rank and in every report. Below −5σ gets its own band:
# Gaussian noise puts only 3×10⁻⁷ of pixels there (−3σ would catch 0.13 %, ~90 ordinary noise
# pixels per 256² tile), so what lands there is defects — dead pixels, over-subtraction, artifacts
# such as a −40 000σ pixel on a real NTT frame — which must not rule the faint band's error.
BAND_EDGES = (-5.0, 3.0, 10.0, 30.0, 100.0, 300.0)

# Fixed log-spaced edges of the |x̂ − x|/σ_noise histogram behind the robust figures (median and
# 99th percentile): 50 bins per decade from 10⁻⁴ to 10⁶, the same on every rank, so the counts
# reduce exactly; exact zeros and the two tails have bins of their own.
ABS_ERROR_EDGES = np.logspace(-4.0, 6.0, 501)
_ABS_BINS = len(ABS_ERROR_EDGES) + 2
_QUANTILES = (("median", 0.5), ("p99", 0.99))


def _abs_histogram(values: np.ndarray) -> np.ndarray:
    """Counts of non-negative ``values``: [exact zeros, (0, edges[0]), each bin, ≥ edges[-1]]."""
    a = np.asarray(values, dtype=np.float64).ravel()
    zero = a == 0.0
    bins = np.bincount(np.digitize(a[~zero], ABS_ERROR_EDGES), minlength=len(ABS_ERROR_EDGES) + 1)
    return np.concatenate([[float(zero.sum())], bins])


def hist_quantile(counts: np.ndarray, q: float, maximum: float) -> float:
    """The ``q`` quantile of the values histogrammed into ``counts`` (see ``ABS_ERROR_EDGES``).

    The smallest value below which a fraction ``q`` of the counts lies, interpolated within its
    bin (geometrically in the log bins, linearly in the first and the overflow bin, whose upper
    end is ``maximum``, the largest value seen); never above ``maximum``. NaN without counts.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    if total == 0.0:
        return math.nan
    cumulative = np.cumsum(counts)
    target = q * total
    k = int(np.searchsorted(cumulative, target, side="left"))
    if k == 0:
        return 0.0
    frac = (target - cumulative[k - 1]) / counts[k]
    edges = ABS_ERROR_EDGES
    if k == 1:
        value = frac * edges[0]
    elif k == len(counts) - 1:
        top = max(maximum, edges[-1])
        value = edges[-1] + frac * (top - edges[-1])
    else:
        lo, hi = edges[k - 2], edges[k - 1]
        value = lo * (hi / lo) ** frac
    return float(min(value, maximum))


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
class _Deviation:
    """Sums of the error ``e = x̂ − r`` against one reference ``r`` (the noisy input or the truth)."""

    n: float = 0.0
    sse: float = 0.0  # physical units²
    sse_over_noise: float = 0.0  # Σ (e / σ_noise)²
    sum_error: float = 0.0
    sum_error_over_noise: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(_ABS_BINS))
    max_abs: float = 0.0  # reduced over ranks as a maximum, not a sum
    max_abs_over_noise: float = 0.0

    def add(self, error: np.ndarray, noise: np.ndarray, where: np.ndarray | None = None) -> None:
        """Add errors ``error`` (B, ...) of tiles with noise σ ``noise`` (B,); only ``where`` if given."""
        e = error.reshape(error.shape[0], -1)
        en = e / noise.reshape(-1, 1)
        if where is not None:
            keep = where.reshape(e.shape)
            e, en = e[keep], en[keep]
        if e.size == 0:
            return
        self.n += float(e.size)
        self.sse += float((e * e).sum())
        self.sse_over_noise += float((en * en).sum())
        self.sum_error += float(e.sum())
        self.sum_error_over_noise += float(en.sum())
        abs_en = np.abs(en)
        self.hist += _abs_histogram(abs_en)
        self.max_abs = max(self.max_abs, float(np.abs(e).max()))
        self.max_abs_over_noise = max(self.max_abs_over_noise, float(abs_en.max()))

    def vector(self) -> np.ndarray:
        head = [self.n, self.sse, self.sse_over_noise, self.sum_error, self.sum_error_over_noise]
        return np.concatenate([np.array(head, dtype=np.float64), self.hist])

    def load(self, values: np.ndarray) -> None:
        self.n, self.sse, self.sse_over_noise, self.sum_error, self.sum_error_over_noise = (
            float(v) for v in values[:5])
        self.hist = np.array(values[5:5 + _ABS_BINS], dtype=np.float64)

    def maxima(self) -> np.ndarray:
        return np.array([self.max_abs, self.max_abs_over_noise], dtype=np.float64)

    def load_maxima(self, values: np.ndarray) -> None:
        self.max_abs, self.max_abs_over_noise = (float(v) for v in values)

    def summary(self, suffix: str = "") -> dict:
        """Everything but PSNR, keys ending in ``suffix``; NaN values when no pixel was added."""
        n = self.n
        out = {
            "mse": self.sse / n if n else math.nan,
            "rmse_over_noise": math.sqrt(self.sse_over_noise / n) if n else math.nan,
            "mean_error": self.sum_error / n if n else math.nan,
            "mean_error_over_noise": self.sum_error_over_noise / n if n else math.nan,
            "max_abs_error": self.max_abs if n else math.nan,
            "max_abs_error_over_noise": self.max_abs_over_noise if n else math.nan,
            **{f"{name}_abs_error_over_noise": hist_quantile(self.hist, q, self.max_abs_over_noise)
               for name, q in _QUANTILES},
            "n_pixels": int(n),
        }
        return {key + suffix: value for key, value in out.items()}


@dataclass
class ErrorSums:
    """Error sums for one reconstruction method at one setting (any method: AE, PCA, fpack),
    against the noisy input and, where the data have it, against the noiseless truth."""

    input: _Deviation = field(default_factory=_Deviation)
    truth: _Deviation = field(default_factory=_Deviation)

    def update(self, x_phys: np.ndarray, recon_phys: np.ndarray, noise_phys: np.ndarray,
               truth_phys: np.ndarray | None = None) -> None:
        """Add a batch.

        Parameters
        ----------
        x_phys, recon_phys : array (B, ...)
            Original and reconstructed tiles in physical units.
        noise_phys : array (B,)
            Each tile's noise σ in physical units.
        truth_phys : array with x_phys's pixels (B, ...), optional
            The noiseless truth in physical units, NaN where unknown (tiles of images without a
            ``TRUTH`` plane); only finite pixels count toward the ``_truth`` figures.
        """
        x = np.asarray(x_phys, dtype=np.float64)
        r = np.asarray(recon_phys, dtype=np.float64)
        noise = np.asarray(noise_phys, dtype=np.float64).reshape(-1)
        self.input.add(r - x, noise)
        if truth_phys is not None:
            t = np.asarray(truth_phys, dtype=np.float64).reshape(x.shape)
            known = np.isfinite(t)
            if known.any():
                self.truth.add(np.where(known, r - t, 0.0), noise, where=known)

    def vector(self) -> np.ndarray:
        return np.concatenate([self.input.vector(), self.truth.vector()])

    def load(self, values: np.ndarray) -> None:
        half = len(values) // 2
        self.input.load(values[:half])
        self.truth.load(values[half:])

    def maxima(self) -> np.ndarray:
        return np.concatenate([self.input.maxima(), self.truth.maxima()])

    def load_maxima(self, values: np.ndarray) -> None:
        self.input.load_maxima(values[:2])
        self.truth.load_maxima(values[2:4])

    def summary(self, peak: float) -> dict:
        """``mse``, ``rmse_over_noise``, ``psnr``, bias, ℓ∞ and robust figures (+ the pixel count),
        the same again with ``_truth`` against the truth (None-able NaN without truth)."""
        out = self.input.summary()
        out["psnr"] = psnr(out["mse"], peak) if self.input.n else math.nan
        out.update(self.truth.summary("_truth"))
        return out


@dataclass
class CodecSums(ErrorSums):
    """Error sums plus the bytes a real codec (fpack, JPEG-XL) spent, for bits per pixel.

    ``payload`` is the coded data alone (the FITS heap, the JPEG-XL codestreams), ``file`` the
    whole file as written (headers, table rows, 2880-byte padding) and ``input_bits`` what the
    input costs uncompressed (pixels × |BITPIX|), so a compression ratio is input bits ÷ stored
    bits whatever the input's type.
    """

    payload_bytes: float = 0.0
    overhead_bytes: float = 0.0
    file_bytes: float = 0.0
    input_bits: float = 0.0
    n_tiles: float = 0.0

    def add_bytes(self, payload: int, overhead: int, file: int, input_bits: float) -> None:
        self.payload_bytes += payload
        self.overhead_bytes += overhead
        self.file_bytes += file
        self.input_bits += input_bits
        self.n_tiles += 1

    def vector(self) -> np.ndarray:
        extra = [self.payload_bytes, self.overhead_bytes, self.file_bytes, self.input_bits, self.n_tiles]
        return np.concatenate([super().vector(), np.array(extra, dtype=np.float64)])

    def load(self, values: np.ndarray) -> None:
        super().load(values[:-5])
        self.payload_bytes, self.overhead_bytes, self.file_bytes, self.input_bits, self.n_tiles = (
            float(v) for v in values[-5:])

    def summary(self, peak: float) -> dict:
        out = super().summary(peak)
        n = self.input.n

        def per_pixel(value):
            return value / n if n else math.nan

        def ratio(stored_bytes):
            return self.input_bits / (8.0 * stored_bytes) if stored_bytes > 0 else math.nan

        out.update(
            bits_per_pixel=per_pixel(8.0 * self.payload_bytes),
            bits_per_pixel_with_headers=per_pixel(8.0 * self.file_bytes),
            overhead_bits_per_pixel=per_pixel(8.0 * self.overhead_bytes),
            input_bits_per_pixel=per_pixel(self.input_bits),
            compression_ratio=ratio(self.payload_bytes),
            compression_ratio_with_headers=ratio(self.file_bytes),
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
        truth_phys: np.ndarray | None = None,
    ) -> None:
        """Add a batch: errors in physical units, likelihood and calibration in normalized units.

        The likelihood is computed where the model made it (normalized units) so that it does not
        depend on the arbitrary physical scale of each file. ``truth_phys`` as in
        :meth:`ErrorSums.update`.
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

    def vector(self) -> np.ndarray:
        head = [self.n, self.nll_sum, self.z_sum, self.z2_sum, self.within_1, self.within_2]
        return np.concatenate([self.errors.vector(), np.array(head), self.z_hist])

    def load(self, values: np.ndarray) -> None:
        width = len(self.errors.vector())
        self.errors.load(values[:width])
        self.n, self.nll_sum, self.z_sum, self.z2_sum, self.within_1, self.within_2 = (
            float(v) for v in values[width:width + 6]
        )
        self.z_hist = np.array(values[width + 6:], dtype=np.float64)

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
    ``BAND_EDGES``, shows where a method loses and whether each band's error falls with η; the
    robust figures per band (median and 99th percentile of |x̂ − x|/σ_noise) say what the typical
    pixel of the band sees.
    """

    n: np.ndarray = field(default_factory=lambda: np.zeros(len(BAND_EDGES) + 1))
    sse_over_noise: np.ndarray = field(default_factory=lambda: np.zeros(len(BAND_EDGES) + 1))
    hist: np.ndarray = field(default_factory=lambda: np.zeros((len(BAND_EDGES) + 1, _ABS_BINS)))
    max_abs_over_noise: np.ndarray = field(default_factory=lambda: np.zeros(len(BAND_EDGES) + 1))

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
        abs_err = (np.abs(x - np.asarray(recon_phys, dtype=np.float64)) / noise).ravel()
        band = np.digitize(snr, BAND_EDGES).ravel()
        size = len(BAND_EDGES) + 1
        self.n += np.bincount(band, minlength=size)
        self.sse_over_noise += np.bincount(band, weights=abs_err ** 2, minlength=size)
        for k in np.unique(band):
            members = abs_err[band == k]
            self.hist[k] += _abs_histogram(members)
            self.max_abs_over_noise[k] = max(self.max_abs_over_noise[k], float(members.max()))

    def vector(self) -> np.ndarray:
        return np.concatenate([self.n, self.sse_over_noise, self.hist.ravel()])

    def load(self, values: np.ndarray) -> None:
        size = len(BAND_EDGES) + 1
        self.n = np.array(values[:size], dtype=np.float64)
        self.sse_over_noise = np.array(values[size:2 * size], dtype=np.float64)
        self.hist = np.array(values[2 * size:], dtype=np.float64).reshape(size, _ABS_BINS)

    def maxima(self) -> np.ndarray:
        return self.max_abs_over_noise.copy()

    def load_maxima(self, values: np.ndarray) -> None:
        self.max_abs_over_noise = np.array(values, dtype=np.float64)

    def summary(self) -> list[dict]:
        """One entry per band: ``snr_low``/``snr_high`` (None = unbounded), ``pixel_fraction``,
        ``rmse_over_noise``, ``median_abs_error_over_noise`` and ``p99_abs_error_over_noise``
        within the band (None if empty) and ``share_of_error``, the band's part of the pooled
        squared error."""
        total_n, total_err = float(self.n.sum()), float(self.sse_over_noise.sum())
        lows, highs = (None, *BAND_EDGES), (*BAND_EDGES, None)
        return [
            {"snr_low": lo, "snr_high": hi,
             "pixel_fraction": float(n) / total_n if total_n else math.nan,
             "rmse_over_noise": math.sqrt(e / n) if n else None,
             **{f"{name}_abs_error_over_noise": hist_quantile(h, q, m) if n else None for name, q in _QUANTILES},
             "share_of_error": float(e) / total_err if total_err else math.nan}
            for lo, hi, n, e, h, m in zip(lows, highs, self.n, self.sse_over_noise, self.hist,
                                          self.max_abs_over_noise, strict=True)
        ]


@dataclass
class KeptSums:
    """How many latent channels the budget left each tile (:mod:`fitsae.budget`), as counts.

    ``size`` is the largest η′ possible (the model's channels); counts per η′ = 0..size (0: the
    tile's median alone) sum exactly over ranks.
    """

    size: int = 1
    counts: np.ndarray = None

    def __post_init__(self) -> None:
        if self.counts is None:
            self.counts = np.zeros(self.size + 1, dtype=np.float64)

    def update(self, kept: np.ndarray) -> None:
        """Add the η′ chosen for each tile of a batch."""
        self.counts += np.bincount(np.asarray(kept, dtype=np.int64).ravel(), minlength=self.size + 1)[: self.size + 1]

    def vector(self) -> np.ndarray:
        return self.counts.copy()

    def load(self, values: np.ndarray) -> None:
        self.counts = np.array(values, dtype=np.float64)

    def summary(self) -> dict:
        """``mean_eta_kept`` and ``tiles_by_eta_kept`` (η′ → tiles, only η′ that occurred)."""
        total = float(self.counts.sum())
        mean = float(np.dot(np.arange(self.size + 1), self.counts) / total) if total else math.nan
        return {"mean_eta_kept": mean,
                "tiles_by_eta_kept": {str(i): int(c) for i, c in enumerate(self.counts) if c}}


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
        """Replace every rank's local sums with the sums over all ranks (exact float64), maxima with maxima."""
        entries = list(self._entries.values())
        if not entries:
            return
        vectors = [e.vector() for e in entries]
        total = distributed.allreduce_sum(np.concatenate(vectors))
        start = 0
        for entry, vec in zip(entries, vectors):
            entry.load(total[start:start + len(vec)])
            start += len(vec)
        # ℓ∞ errors reduce as maxima: a second collective, same key order on every rank.
        peaks = [(e, e.maxima()) for e in entries if hasattr(e, "maxima")]
        if peaks:
            total = distributed.allreduce_max_array(np.concatenate([vec for _, vec in peaks]))
            start = 0
            for entry, vec in peaks:
                entry.load_maxima(total[start:start + len(vec)])
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
