"""The metrics window of a training run: per-example figures since the last log, over all ranks.

Contract: :class:`MetricsWindow` keeps sums and counts (never means) of every per-example (B,)
tensor a model's ``compute_losses`` returns, so one allreduce gives the exact global mean however
the examples were spread over ranks; ``mse`` and ``bpp`` are also kept per η bucket, which shows
what one tunable model does at each rate.
"""

from __future__ import annotations

import numpy as np

from fitsae import distributed

__all__ = ["MetricsWindow"]


class MetricsWindow:
    """Sums and counts of per-example metrics since the last log, reduced exactly over ranks.

    ``mse`` and, for a rate-trained model, ``bpp`` are also summed per η bucket and logged as
    ``mse_eta/AAA-BBB`` and ``rate/bpp_eta/AAA-BBB``: what one model does at each rate.
    """

    BUCKETED = {"mse": "mse_eta", "bpp": "rate/bpp_eta"}

    def __init__(self, channels: int, buckets: int):
        edges = np.unique(np.round(np.geomspace(1, channels + 1, buckets + 1)).astype(int))
        self.edges = edges
        self.reset()

    def reset(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.bucket_sum = {key: np.zeros(len(self.edges) - 1) for key in self.BUCKETED}
        self.bucket_count = np.zeros(len(self.edges) - 1)
        self.images = 0

    def add(self, out: dict) -> None:
        arrays = {k: v.numpy() for k, v in out.items() if not k.startswith("loss_") and len(v.shape) == 1}
        for key, value in arrays.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(np.sum(value, dtype=np.float64))
            self.counts[key] = self.counts.get(key, 0) + value.size
        if "eta" in arrays:
            index = np.clip(np.searchsorted(self.edges, arrays["eta"], side="right") - 1, 0, len(self.edges) - 2)
            for key in self.BUCKETED:
                if key in arrays:
                    np.add.at(self.bucket_sum[key], index, arrays[key])
            np.add.at(self.bucket_count, index, 1)
        self.images += len(next(iter(arrays.values()))) if arrays else 0

    def reduce(self, keys: list[str]) -> dict:
        """Global means over all ranks; ``keys`` must be the same list on every rank."""
        local = np.concatenate([
            [self.sums.get(k, 0.0) for k in keys], [self.counts.get(k, 0) for k in keys],
            *self.bucket_sum.values(), self.bucket_count, [self.images],
        ])
        total = distributed.allreduce_sum(local)
        n = len(keys)
        sums, counts = total[:n], total[n:2 * n]
        nb = len(self.bucket_count)
        bucket_totals = {key: total[2 * n + i * nb:2 * n + (i + 1) * nb] for i, key in enumerate(self.BUCKETED)}
        start = 2 * n + len(self.BUCKETED) * nb
        bcount = total[start:start + nb]
        means = {k: s / c for k, s, c in zip(keys, sums, counts, strict=True) if c}
        if "bpp" in means:
            means["rate/bpp"] = means.pop("bpp")
        for i in range(nb):
            if bcount[i]:
                lo, hi = self.edges[i], self.edges[i + 1] - 1
                for key, tag in self.BUCKETED.items():
                    if key in keys:
                        means[f"{tag}/{lo:03d}-{hi:03d}"] = bucket_totals[key][i] / bcount[i]
        means["images"] = total[-1]
        return means

