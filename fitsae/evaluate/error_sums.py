"""Reconstruction errors as exact sums: pooled MSE, RMSE in noise units, bias, ℓ∞, robust quantiles.

Contract: every figure is kept as float64 sums and counts (never running means), so the sums
of all ranks give the value one process would, and one allreduce serves a whole evaluation
(:class:`fitsae.evaluate.metrics.MetricBook`). Errors are ``e = x̂ − x`` in physical units (the
FITS pixel units after BSCALE/BZERO) and in units of each tile's noise σ; each is measured
against the noisy input and, with the suffix ``_truth``, against the noiseless truth where
simulations wrote one. :meth:`ErrorSums.summary` defines every figure of ``report.json``.

Why: a method that removes noise is penalised against the input and rewarded against the truth;
only both readings, pooled exactly over ranks, compare methods fairly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ABS_ERROR_EDGES", "ABS_BINS", "QUANTILES", "abs_histogram", "hist_quantile", "psnr",
           "tile_error_over_noise", "ErrorSums", "CodecSums"]

# Fixed log-spaced edges of the |x̂ − x|/σ_noise histogram behind the robust figures (median and
# 99th percentile): 50 bins per decade from 10⁻⁴ to 10⁶, the same on every rank, so the counts
# reduce exactly; exact zeros and the two tails have bins of their own.
ABS_ERROR_EDGES = np.logspace(-4.0, 6.0, 501)
ABS_BINS = len(ABS_ERROR_EDGES) + 2
QUANTILES = (("median", 0.5), ("p99", 0.99))


def abs_histogram(values: np.ndarray) -> np.ndarray:
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
    hist: np.ndarray = field(default_factory=lambda: np.zeros(ABS_BINS))
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
        self.hist += abs_histogram(abs_en)
        self.max_abs = max(self.max_abs, float(np.abs(e).max()))
        self.max_abs_over_noise = max(self.max_abs_over_noise, float(abs_en.max()))

    def vector(self) -> np.ndarray:
        head = [self.n, self.sse, self.sse_over_noise, self.sum_error, self.sum_error_over_noise]
        return np.concatenate([np.array(head, dtype=np.float64), self.hist])

    def load(self, values: np.ndarray) -> None:
        self.n, self.sse, self.sse_over_noise, self.sum_error, self.sum_error_over_noise = (
            float(v) for v in values[:5])
        self.hist = np.array(values[5:5 + ABS_BINS], dtype=np.float64)

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
               for name, q in QUANTILES},
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
        the same again with ``_truth`` against the truth (None-able NaN without truth).

        - ``mse``: physical units², pooled over pixels; ``rmse_over_noise``:
          ``sqrt(mean(((x − x̂) / σ_noise)²))``, 1.0 meaning errors as large as the noise;
        - ``mean_error``, ``mean_error_over_noise``: the mean of e = x̂ − x (positive: too bright);
          ``max_abs_error``, ``max_abs_error_over_noise``: its ℓ∞ norm;
        - ``median_abs_error_over_noise``, ``p99_abs_error_over_noise``: |e|/σ_noise for the typical
          pixel and the worst 1 %, read from the fixed histogram ``ABS_ERROR_EDGES`` (50 bins per
          decade, so sums stay exact over ranks: within one bin, 4.7 %, of the exact value; exact
          zeros are counted apart, so a lossless method reads 0);
        - ``psnr``: ``10 log10(peak² / mse)``, ``peak`` the physical range of all evaluated pixels.
        """
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
