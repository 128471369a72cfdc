"""Aperture-flux errors of a scoring pass, as counts that reduce over ranks exactly.

Contract: :class:`FluxSums` gathers, for one method at one η, the relative aperture-flux errors
(F_rec − F_orig) / F_orig — or (F_rec − F_true) / F_true against a simulation's truth — of the
sources at or above SNR 20 on the original
(:func:`fitsae.evaluate.photometry.flux_errors`), with the ``vector``/``load``/``summary``
protocol of :class:`fitsae.evaluate.metrics.MetricBook`. The median |error| comes from the same
fixed log-spaced histogram as the pixel errors' robust figures, so it reduces over any number
of ranks without gathering per-source lists (within the 4.7 % bin width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fitsae.evaluate.error_sums import ABS_BINS, abs_histogram, hist_quantile

__all__ = ["FluxSums", "SNR_MIN", "detect_tiles"]

# The figure, the one astronomers ask first: sources well above the detection limit.
SNR_MIN = 20.0


@dataclass
class FluxSums:
    """Relative aperture-flux errors of one method at one η, over the test tiles."""

    sources: float = 0.0
    used: float = 0.0
    signed: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(ABS_BINS))
    peak: float = 0.0

    def update(self, relative_errors: np.ndarray, n_sources: int) -> None:
        """Add one tile: the relative errors of its sources above the cut, and how many it had."""
        rel = np.asarray(relative_errors, np.float64)
        rel = rel[np.isfinite(rel)]
        self.sources += n_sources
        self.used += rel.size
        self.signed += float(rel.sum())
        self.hist += abs_histogram(np.abs(rel))
        if rel.size:
            self.peak = max(self.peak, float(np.max(np.abs(rel))))

    def add(self, sources: list, reconstructions: np.ndarray, references: np.ndarray | None = None) -> None:
        """Add a batch: each tile's sources (:func:`detect_tiles`; None = not measured) and its
        reconstruction in physical units, shape (n, h, w) or (n, h, w, 1); with ``references``
        (same shape: a simulation's noiseless truth) the fluxes are compared with theirs instead
        of the original's (the SNR cut stays the original's)."""
        from fitsae.evaluate.photometry import flux_errors

        refs = [None] * len(sources) if references is None else np.asarray(references)
        for found, rec, ref in zip(sources, np.asarray(reconstructions), refs, strict=True):
            if found is not None:
                shape = found.background.shape
                errors = flux_errors(found, rec.reshape(shape), None if ref is None else ref.reshape(shape),
                                     snr_min=SNR_MIN)
                self.update(errors.relative_errors, errors.n_sources)

    def vector(self) -> np.ndarray:
        return np.concatenate([[self.sources, self.used, self.signed], self.hist])

    def load(self, values: np.ndarray) -> None:
        self.sources, self.used, self.signed = (float(v) for v in values[:3])
        self.hist = np.array(values[3:], dtype=np.float64)

    def maxima(self) -> np.ndarray:
        return np.array([self.peak])

    def load_maxima(self, values: np.ndarray) -> None:
        self.peak = float(values[0])

    def summary(self) -> dict:
        """``median_abs_relative_flux_error`` (a fraction) and its 95 % interval
        (``median_abs_relative_flux_error_ci95``), ``mean_relative_flux_error`` (the bias),
        ``n_sources`` (whole apertures) and ``n_used`` (SNR ≥ ``snr_min`` on the original); the
        median is NaN and the interval None without sources.

        The interval is the median's distribution-free one, the order statistics n/2 ± 1.96·√n/2
        of the n sources (the number of sources below the true median is binomial). Why: a median
        of a couple of hundred sources is uncertain by a sizeable part of itself, so a figure near a
        target can only be judged with it.
        """
        used = int(self.used)
        interval = None
        if used:
            half = 0.98 / math.sqrt(used)
            interval = [hist_quantile(self.hist, max(0.5 - half, 0.0), self.peak),
                        hist_quantile(self.hist, min(0.5 + half, 1.0), self.peak)]
        return {"median_abs_relative_flux_error": hist_quantile(self.hist, 0.5, self.peak) if used else math.nan,
                "median_abs_relative_flux_error_ci95": interval,
                "mean_relative_flux_error": self.signed / used if used else math.nan,
                "n_sources": int(self.sources), "n_used": used, "snr_min": SNR_MIN}


def detect_tiles(x_phys: np.ndarray, noise_phys: np.ndarray) -> list:
    """Sources on each original tile (shape (n, h, w) or (n, h, w, 1), physical units), detected
    at 5σ with the tile's noise σ; None for a tile photometry cannot measure (non-finite pixels,
    σ ≤ 0) and for every tile when ``sep`` is not installed (the ``sim`` extra)."""
    try:
        from fitsae.evaluate.photometry import detect_sources
        import sep  # noqa: F401
    except ImportError:
        return [None] * len(x_phys)
    found = []
    for tile, noise in zip(np.asarray(x_phys), np.asarray(noise_phys, np.float64), strict=True):
        image = tile.reshape(tile.shape[:2])
        usable = noise > 0 and bool(np.all(np.isfinite(image)))
        found.append(detect_sources(image, float(noise)) if usable else None)
    return found
