"""Interlaced context: a tile's integers coded in passes, each pixel predicted by the model and
by its already decoded neighbours.

Contract: :func:`encode` codes the integers k of an (h, w) tile under the model's per-pixel
:class:`~fitsae.codec.residual.Prediction` in ``1 + 2·LEVELS`` passes and returns the tile's
parameters (one byte string); :func:`decode` inverts it from the bytes, the same prediction and
those parameters. Pass 0 is the lattice of every 2^LEVELS-th pixel in both axes, under the model
alone. Then, for strides s = 2^LEVELS … 2: the centres of the s-squares ("diag": their 4
diagonal neighbours at s/2 are decoded), then the midpoints of the squares' sides ("cross": 4
neighbours at s/2 along the axes). A pass's pixel is coded under

    μ = m + a·ē,    σ² = b₁·w² + b₂·d²,

m and w being the model's quantized mean and width, ē the mean residual k − m of its decoded
neighbours and d their mean absolute deviation from ē; (a, b₁, b₂) are indices into
:data:`A_GRID`, :data:`B1_GRID`, :data:`B2_GRID`, chosen per tile and pass by the encoder. The
model alone is (a, b₁, b₂) = (0, 1, 0), always among the encoder's candidates. Every operation
on decoded values is elementwise IEEE float64 in a fixed order, and σ² is placed in the width
table by comparison with its squared boundaries (no logarithm), so the decoder's probabilities
are the encoder's on any machine.

Why: where the model knows the image its residual is noise and the neighbours add nothing
(a = 0); on images unlike its training data (a crowded cluster) its residual is spatially
correlated, and the decoded neighbours predict it (docs/measurements.md, "Codec").
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from fitsae.codec import residual
from fitsae.entropy import CodingError

__all__ = ["LEVELS", "A_GRID", "B1_GRID", "B2_GRID", "NEUTRAL", "encode", "decode"]

LEVELS = 3
A_GRID = np.arange(17, dtype=np.float64) / 16.0
B1_GRID = np.array([0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])
B2_GRID = np.array([0.0, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0])
NEUTRAL = (0, len(B1_GRID) - 1, 0)
FIT_SAMPLE = 4096  # pixels per pass the encoder fits (a, b₁, b₂) on
_BOUNDS_SQ = (2.0 ** ((np.arange(len(residual.WIDTHS) - 1) + 0.5) / 3.0 - 4.0)) ** 2


@lru_cache(maxsize=16)
def _passes(h: int, w: int) -> tuple:
    """((targets, neighbours), …) in coding order: flat C-order indices, neighbours (4, n), −1 outside."""
    y, x = np.divmod(np.arange(h * w), w)
    lattice = 1 << LEVELS
    out = [(np.flatnonzero((y % lattice == 0) & (x % lattice == 0)), None)]
    for level in range(LEVELS, 0, -1):
        s, half = 1 << level, 1 << (level - 1)
        diag = (y % s == half) & (x % s == half)
        cross = ((y % s == 0) & (x % s == half)) | ((y % s == half) & (x % s == 0))
        for chosen, steps in ((diag, ((-1, -1), (-1, 1), (1, -1), (1, 1))),
                              (cross, ((-1, 0), (1, 0), (0, -1), (0, 1)))):
            t = np.flatnonzero(chosen)
            ty, tx = y[t], x[t]
            nb = np.full((4, t.size), -1, np.int64)
            for j, (dy, dx) in enumerate(steps):
                y2, x2 = ty + dy * half, tx + dx * half
                ok = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
                nb[j, ok] = y2[ok] * w + x2[ok]
            out.append((t, nb))
    return tuple(out)


def _features(e: np.ndarray, nb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ē, d) of each target from the residuals ``e`` of its decoded neighbours (fixed order)."""
    valid = nb >= 0
    vals = e[np.where(valid, nb, 0)]
    count = valid.sum(axis=0).astype(np.float64)  # ≥ 1: one neighbour always lies inside the tile
    total = np.zeros(nb.shape[1])
    for j in range(nb.shape[0]):
        total = total + np.where(valid[j], vals[j], 0.0)
    mean = total / count
    dev = np.zeros(nb.shape[1])
    for j in range(nb.shape[0]):
        dev = dev + np.where(valid[j], np.abs(vals[j] - mean), 0.0)
    return mean, dev / count


def _prediction(m, w2, mean, dev, params) -> residual.Prediction:
    a, b1, b2 = params
    mu = m + A_GRID[a] * mean
    var = B1_GRID[b1] * w2 + B2_GRID[b2] * (dev * dev)
    centre = np.floor(mu + 0.5)
    offset = np.floor((mu - centre) * residual.MEAN_GRID + 0.5) / residual.MEAN_GRID
    index = np.minimum(np.searchsorted(_BOUNDS_SQ, var, side="right"), len(residual.WIDTHS) - 1)
    return residual.Prediction(centre.astype(np.int64), offset, index.astype(np.int64))


def _bits(k: np.ndarray, p: residual.Prediction) -> float:
    """Ideal bits of ``k`` under a discretized Laplace of ``p``: the encoder's yardstick for (a, b₁, b₂)."""
    b = p.width / math.sqrt(2.0)
    r = k - p.centre - p.offset

    def cdf(t):
        return np.where(t < 0, 0.5 * np.exp(np.minimum(t, 0.0) / b), 1.0 - 0.5 * np.exp(-np.maximum(t, 0.0) / b))

    return float(-np.sum(np.log2(np.maximum(cdf(r + 0.5) - cdf(r - 0.5), 2.0 ** -30))))


def _fit(k, m, w2, mean, dev, usable) -> tuple:
    """(a, b₁, b₂) of one pass: a by least squares on the residuals, b₁ and b₂ by ideal bits."""
    sel = np.flatnonzero(usable)
    if sel.size == 0:
        return NEUTRAL
    sel = sel[::-(-sel.size // FIT_SAMPLE)]
    k, m, w2, mean, dev = k[sel], m[sel], w2[sel], mean[sel], dev[sel]
    den = float(mean @ mean)
    a = 0 if den == 0 else int(np.clip(np.floor(16.0 * float((k - m) @ mean) / den + 0.5), 0, 16))
    candidates = [NEUTRAL] + [(a, b1, b2) for b1 in range(len(B1_GRID)) for b2 in range(len(B2_GRID))]
    costs = [_bits(k, _prediction(m, w2, mean, dev, c)) for c in candidates]
    return candidates[int(np.argmin(costs))]


def encode(k: np.ndarray, base: residual.Prediction, families: tuple,
           special: np.ndarray | None = None) -> tuple[str, bytes, int, bytes, np.ndarray]:
    """Code a tile's integers ``k`` (h, w) in passes under each of ``families``; the smallest as
    (family, bytes, escapes, parameters, integers coded).

    ``special`` (h, w) marks pixels whose value is restored from a mask (NaN/BLANK, exact zeros):
    each is coded as its pass's prediction centre, which costs next to nothing, and the returned
    integers hold those centres (the decoder's values there, the neighbours its later passes see).
    The parameters are fitted once, under a Laplace yardstick, for every family.
    """
    h, w = k.shape
    k = np.asarray(k, np.int64).reshape(-1).copy()
    special = np.zeros(k.size, bool) if special is None else np.asarray(special, bool).reshape(-1)
    m, w2 = base.centre + base.offset, base.width ** 2
    e = np.zeros(k.size)
    coded, params = [], []
    for t, nb in _passes(h, w):
        if nb is None:
            p = residual.Prediction(base.centre[t], base.offset[t], base.index[t])
        else:
            mean, dev = _features(e, nb)
            chosen = _fit(k[t], m[t], w2[t], mean, dev, ~special[t])
            params.extend(chosen)
            p = _prediction(m[t], w2[t], mean, dev, chosen)
        k[t] = np.where(special[t], p.centre, k[t])
        e[t] = k[t] - m[t]
        coded.append((k[t], p))
    best = None
    for family in families:
        data, escapes = residual.encode_passes(coded, family)
        if best is None or len(data) < len(best[1]):
            best = (family, data, escapes, bytes(params), k)
    return best


def decode(data: bytes, escapes: int, base: residual.Prediction, family: str, params: bytes,
           shape: tuple) -> np.ndarray:
    """Inverse of :func:`encode`: flat int64 integers; :class:`CodingError` when the bytes do not fit."""
    h, w = shape
    passes = _passes(h, w)
    limits = np.array([len(A_GRID), len(B1_GRID), len(B2_GRID)])
    if len(params) != limits.size * (len(passes) - 1):
        raise CodingError(f"the context parameters ({len(params)} bytes) do not fit {len(passes) - 1} passes")
    chosen = np.frombuffer(params, np.uint8).astype(np.int64).reshape(-1, limits.size)
    if np.any(chosen >= limits):
        raise CodingError(f"the context parameters ({len(params)} bytes) do not fit {len(passes) - 1} passes")
    m, w2 = base.centre + base.offset, base.width ** 2
    k, e = np.zeros(h * w, np.int64), np.zeros(h * w)
    reader = residual.PassReader(data, escapes, family)
    for i, (t, nb) in enumerate(passes):
        if nb is None:
            p = residual.Prediction(base.centre[t], base.offset[t], base.index[t])
        else:
            mean, dev = _features(e, nb)
            p = _prediction(m[t], w2[t], mean, dev, tuple(int(v) for v in chosen[i - 1]))
        k[t] = reader.read(p)
        e[t] = k[t] - m[t]
    reader.finish()
    return k
