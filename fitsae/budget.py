"""Rate budgets: at budget η the encoder keeps the first η′ ≤ η channels that reconstruct best.

Why
---
One tunable-rate model serves every η, but nothing in a finite training makes the decoder use a
further channel well on every image. On the demo's GalSim fields the error of the plain mask (keep
exactly η channels) goes up and down with η by several per cent: the pooled error is ruled by a
dozen star cores per tile that the loss (in asinh units) weighs no more than noise, and how well
the decoder happens to fit them jumps from one η to the next (see the report's ``bands``).

The encoder has the original image, so it can do what classical codecs do in their mode
decision: decode with η′ = 1, 2, …, η channels, keep the η′ whose μ is closest to the image (the
smallest squared error in physical units; ties keep the smaller η′) and store only those
channels. The decoder needs nothing more: the stored channel count *is* η′, and the dropped
channels are zero exactly as in training. Two things follow by construction, per image and so
for any sum over images:

- the error never grows with the budget (η′ ranges over a larger set), and it is never larger
  than the plain mask's error at the same η;
- the stored rate is η′ ≤ η channels, so the budget's compression ratio is a lower bound.

The cost is η decodes per image at compression time, none at decompression.

Where the choice is made: per image plane in :mod:`fitsae.codec` (one η′ per ``LATENT`` HDU) and
per scored tile in :mod:`fitsae.evaluate.runner`. The two coincide when a plane is one tile (the
demo's 256×256 fields); a larger plane gets one η′ for the whole plane from the codec.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RunningBest"]


class RunningBest:
    """Per-item best reconstruction over η′ = 1, 2, … offered in increasing order.

    ``offer(eta, error, *arrays)`` takes a batch's per-item errors (shape (N,)) at channel count
    ``eta`` and any arrays with a leading item axis (μ, log σ², …); afterwards ``eta``, ``error``
    and ``arrays`` hold, for each item, the smallest error seen so far, the η′ that gave it and
    that η′'s arrays. Reading them after offering η′ = 1..η gives the budget-η choice, so one pass
    over η′ serves every budget.
    """

    def __init__(self) -> None:
        self.eta: np.ndarray | None = None
        self.error: np.ndarray | None = None
        self.arrays: tuple[np.ndarray, ...] = ()
        self._last = 0

    def offer(self, eta: int, error, *arrays) -> None:
        eta = int(eta)
        if eta <= self._last:
            raise ValueError(f"η′ must be offered in increasing order: {eta} after {self._last}")
        self._last = eta
        error = np.asarray(error, dtype=np.float64).reshape(-1)
        arrays = tuple(np.asarray(a) for a in arrays)
        if self.error is None:
            self.eta = np.full(error.shape, eta, dtype=np.int64)
            self.error = error.copy()
            self.arrays = tuple(a.copy() for a in arrays)
            return
        if error.shape != self.error.shape or len(arrays) != len(self.arrays):
            raise ValueError("every offer must cover the same items with the same arrays")
        better = error < self.error  # strict: a tie keeps the smaller η′ (fewer stored values)
        self.eta = np.where(better, eta, self.eta)
        self.error = np.where(better, error, self.error)
        self.arrays = tuple(np.where(better.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
                            for new, old in zip(arrays, self.arrays))
