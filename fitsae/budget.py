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

Below η′ = 1 the codec also tries η′ = 0, the tile's median alone (:mod:`fitsae.codec.encoder`):
where the model is bad (a tile unlike anything it learned) the budget then falls back to the
trivial reconstruction instead of sending a worse one.

The cost is one decode per tried η′ at compression time, none at decompression. Up to
``EXHAUSTIVE_UP_TO`` channels every η′ ≤ η is tried; a model with more channels tries the values
of a fixed log-spaced ladder (:func:`ladder`) below η, and η itself (:func:`candidates`), so
compressing with a 192-channel model costs at most 65 decodes, not 192. The error then falls
with the budget across ladder values (the candidates of a budget on the ladder are among those
of every larger budget); a budget off the ladder is tried by itself and is not a candidate of the
next one, so between two such budgets the error may rise. Evaluation scores ladder budgets only
by default.

Where the choice is made: per image plane in :mod:`fitsae.codec` (one η′ per ``LATENT`` HDU) and
per scored tile in :mod:`fitsae.evaluate.scoring`. The two coincide when a plane is one tile (the
demo's 256×256 fields); a larger plane gets one η′ for the whole plane from the codec.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXHAUSTIVE_UP_TO", "LADDER_SIZE", "RunningBest", "candidates", "ladder"]

EXHAUSTIVE_UP_TO = 64
LADDER_SIZE = 64


def ladder(channels: int) -> list[int]:
    """The channel counts a budget may settle on below its η: all of 1..C up to
    ``EXHAUSTIVE_UP_TO`` channels, else up to ``LADDER_SIZE`` log-spaced values from 1 to C."""
    channels = int(channels)
    if channels <= EXHAUSTIVE_UP_TO:
        return list(range(1, channels + 1))
    return sorted({int(k) for k in np.round(np.geomspace(1, channels, LADDER_SIZE))})


def candidates(eta: int, channels: int) -> list[int]:
    """The η′ an encoder with budget ``eta`` tries, in increasing order: the ladder's values
    ≤ η, and η itself. A budget on the ladder, and all it tries, is tried by every larger
    budget: that is what keeps the error from rising between ladder budgets."""
    eta = int(eta)
    tried = [k for k in ladder(channels) if k <= eta]
    return tried if tried and tried[-1] == eta else tried + [eta]


class RunningBest:
    """Per-item best reconstruction over η′ = 0, 1, 2, … offered in increasing order.

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
        self._last = -1

    def copy(self) -> "RunningBest":
        """An independent copy: to try one more η′ without offering it to this one."""
        other = RunningBest()
        other.eta = None if self.eta is None else self.eta.copy()
        other.error = None if self.error is None else self.error.copy()
        other.arrays = tuple(a.copy() for a in self.arrays)
        other._last = self._last
        return other

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
