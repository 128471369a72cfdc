"""The metric book: named exact-sum accumulators of one evaluation, reduced over ranks at once.

Every metric is kept as float64 sums and integer-valued counts rather than running means, for
two reasons. First, under ``mpirun`` each rank scores its own shard of tiles, and the global
value must be ``sum / count`` over all pixels of all ranks: a mean of per-rank means would weigh
a short last shard like a full one. Second, sums can be reduced with one
:func:`fitsae.distributed.allreduce_sum` call for the whole evaluation (all η, all methods), so
the communication cost does not grow with the number of settings scored. The accumulators live
by concept: :mod:`.error_sums`, :mod:`.calibration`, :mod:`.bands`, :mod:`.tallies`,
:mod:`.flux_sums`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fitsae import distributed
from fitsae.evaluate.bands import BandSums
from fitsae.evaluate.calibration import GaussianSums
from fitsae.evaluate.error_sums import CodecSums, ErrorSums
from fitsae.evaluate.flux_sums import FluxSums
from fitsae.evaluate.tallies import KeptSums, PairedChangeSums, RateSums

__all__ = ["MetricBook", "DataRange"]


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

    def flux(self, key) -> FluxSums:
        return self._entries.setdefault(key, FluxSums())

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
