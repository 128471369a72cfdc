"""Small tallies of a scoring pass: paired per-tile change between two η, kept channels, coded rate.

Contract: each class keeps exact sums with the ``vector``/``load``/``summary`` protocol of
:class:`fitsae.evaluate.metrics.MetricBook`, so it reduces over ranks with everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedChangeSums", "KeptSums", "RateSums"]


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

