"""The learned per-channel prior over quantized latents, and the rate it implies.

Each latent channel c gets its own univariate density, the "deep factorized" prior of Ballé et
al. 2018 (arXiv 1802.01436, appendix 6.1): a small monotone network maps y to the logit of a
cumulative distribution F_c(y), so the probability of an integer k is F_c(k + ½) − F_c(k − ½) —
exactly what an entropy coder spends −log₂ of. In training the latent carries uniform noise
U(−½, ½) in place of rounding, and the same expression is then the density of the noisy latent,
which makes the rate differentiable (Ballé et al. 2017, arXiv 1611.01704).

Written with ``keras.ops`` (tensorflow-compression cannot be used: its last release pins
TensorFlow 2.14). At export the density is evaluated once per integer of each channel's support
and frozen as integer frequency tables (:mod:`fitsae.entropy`); the coder never evaluates
this network, so decoding does not depend on floating-point details of the machine.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

__all__ = ["FactorizedPrior", "LIKELIHOOD_FLOOR"]

# Probabilities are floored here before the log: a latent far in a tail costs at most ~30 bits
# in training (the coder pays for it with an escape), instead of an infinite or NaN gradient.
LIKELIHOOD_FLOOR = 1e-9


class FactorizedPrior(keras.layers.Layer):
    """Per-channel monotone CDF ``F_c`` over the last axis of a latent tensor.

    Parameters
    ----------
    channels : int
        C, the latent channels (the last axis of every tensor this layer sees).
    filters : tuple of int
        Widths of the hidden layers of each channel's CDF network (Ballé et al. use 3, 3, 3).
    init_scale : float
        Rough initial width of the densities, in latent units.
    """

    def __init__(self, channels: int, filters=(3, 3, 3), init_scale: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        widths = (1,) + self.filters + (1,)
        scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
        # One attribute per weight: TensorFlow's checkpoints track a layer's attributes, and a
        # list of weights held by a Keras 3 layer is not tracked (the prior would not be saved).
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1.0 / scale / widths[i + 1]))
            setattr(self, f"matrix{i}", self.add_weight(
                shape=(self.channels, widths[i + 1], widths[i]), name=f"matrix{i}",
                initializer=keras.initializers.Constant(init)))
            setattr(self, f"bias{i}", self.add_weight(
                shape=(self.channels, widths[i + 1], 1), name=f"bias{i}",
                initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=i)))
            if i < len(self.filters):
                setattr(self, f"factor{i}", self.add_weight(
                    shape=(self.channels, widths[i + 1], 1), name=f"factor{i}",
                    initializer=keras.initializers.Zeros()))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "filters": list(self.filters),
                "init_scale": self.init_scale}

    def logits_cumulative(self, values):
        """logit F_c(values) for values of shape (C, N): one row per channel."""
        h = ops.expand_dims(values, 1)  # (C, 1, N)
        for i in range(len(self.filters) + 1):
            matrix, bias = getattr(self, f"matrix{i}"), getattr(self, f"bias{i}")
            h = ops.matmul(ops.softplus(matrix), h) + bias  # positive weights: monotone
            if i < len(self.filters):
                h = h + ops.tanh(getattr(self, f"factor{i}")) * ops.tanh(h)  # factor > -1 keeps it monotone
        return h[:, 0, :]

    def likelihood(self, y):
        """P(k − ½ < Y_c ≤ k + ½) at every element of ``y`` (…, C), floored at LIKELIHOOD_FLOOR.

        For integer ``y`` this is the probability the coder uses; for ``y`` with uniform noise it is
        the density of the noisy latent. The sign flip evaluates both CDFs in the tail where the
        sigmoid is not saturated, so far tails do not round to 1 − 1 = 0.
        """
        shape = ops.shape(y)
        rows = ops.reshape(ops.moveaxis(y, -1, 0), (self.channels, -1))
        lower = self.logits_cumulative(rows - 0.5)
        upper = self.logits_cumulative(rows + 0.5)
        sign = ops.stop_gradient(-ops.sign(lower + upper))
        p = ops.abs(ops.sigmoid(sign * upper) - ops.sigmoid(sign * lower))
        p = ops.maximum(p, LIKELIHOOD_FLOOR)
        moved = ops.reshape(p, (self.channels,) + tuple(shape[:-1]))
        return ops.moveaxis(moved, 0, -1)

    def bits(self, y):
        """−log₂ of :meth:`likelihood`, element-wise (…, C)."""
        return -ops.log(self.likelihood(y)) / math.log(2.0)

    def call(self, y):
        return self.bits(y)

    def cdf_table(self, low: np.ndarray, high: np.ndarray) -> list[np.ndarray]:
        """Per channel c, P(Y_c ∈ (k − ½, k + ½]) for the integers k = low[c]..high[c] (float64).

        The network runs in float32 once over the union of the supports; these numbers become the
        integer tables the coder uses once, at export, and never again.
        """
        first, last = int(np.min(low)), int(np.max(high))
        ks = np.arange(first, last + 1, dtype=np.float32)
        grid = np.tile(ks[None, :], (self.channels, 1))
        lower = ops.convert_to_numpy(self.logits_cumulative(grid - 0.5)).astype(np.float64)
        upper = ops.convert_to_numpy(self.logits_cumulative(grid + 0.5)).astype(np.float64)
        sign = -np.sign(lower + upper)
        p = np.abs(_sigmoid(sign * upper) - _sigmoid(sign * lower))
        return [p[c, int(low[c]) - first:int(high[c]) - first + 1] for c in range(self.channels)]

    def quantiles(self, tail: float, search: float = 1e5) -> tuple[np.ndarray, np.ndarray]:
        """Per channel, the y where F_c(y) = tail/2 and 1 − tail/2 (bisection on the monotone CDF).

        CompressAI's EntropyBottleneck learns these with an auxiliary loss; the prior is frozen
        at export, so here they are found exactly then, at no training cost.
        """
        targets = np.log(np.array([tail / 2, 1 - tail / 2]) / (1 - np.array([tail / 2, 1 - tail / 2])))
        result = []
        for target in targets:
            lo = np.full(self.channels, -search, np.float64)
            hi = np.full(self.channels, search, np.float64)
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                value = ops.convert_to_numpy(
                    self.logits_cumulative(mid.astype(np.float32)[:, None]))[:, 0].astype(np.float64)
                below = value < target
                lo = np.where(below, mid, lo)
                hi = np.where(below, hi, mid)
            result.append(0.5 * (lo + hi))
        return result[0], result[1]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))
