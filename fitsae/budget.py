"""Rate budgets: at budget η the encoder keeps the first η′ ≤ η channels that reconstruct best.

Contract: the codec (per tile, :mod:`fitsae.codec.encoder`) and evaluation (per scored tile,
:mod:`fitsae.evaluate.scoring`) try η′ = 0 (the tile's median alone) and the η′ of
:func:`candidates`, and keep the one whose μ has the smallest squared error in physical units
(ties keep the smaller η′). The stored channel count is η′, so the decoder needs nothing more.
By construction the error is never above the plain mask's (exactly η channels), never grows
from one ladder budget to a larger one, and the stored rate is at most η channels.

Why: nothing in a finite training makes the decoder use every further channel well on every
image; the encoder has the image and can check, as classical codecs do in their mode decision.
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
    budget: that is what keeps the error from rising between ladder budgets. A budget off the
    ladder is no candidate of the next one, so between two such budgets the error may rise
    (evaluation scores ladder budgets by default). Each candidate costs one decode at
    compression and none at decompression: at most ``LADDER_SIZE`` + 1, e.g. 65 for a
    192-channel model."""
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
