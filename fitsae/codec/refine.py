"""Encoder-side refinement: per tile, descend the model's own objective over its latents.

Contract: :meth:`Refiner.symbols` returns integers for the first η channels of one tile whose
:meth:`~fitsae.models.tunable.TunableAutoencoder.coding_loss` (λ(η)·distortion + bits under the
prior, of the rounded latents) is never above that of the encoder's own rounded output: it starts
there and keeps the best iterate. Decoders are untouched: a file holds integers either way, so
refined files decode with any fitsae that reads the format.

Why: the encoder is one small network amortized over every tile, and at a fixed η its output is
not the integers the decoder and prior would score best for *this* tile. A few hundred Adam steps
on the latents (straight-through rounding, no randomness) close part of that gap, at the price of
more bits and of encoding time (``benchmarks/codec.py --refine``); what it buys and costs is
measured in the README ("Compressing files").
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEARNING_RATE", "PATIENCE", "Refiner", "refiner_for", "refusal"]

LEARNING_RATE = 0.1  # latent units (the rounding step is 1): a step crosses a rounding edge in ~5 iterations
PATIENCE = 10  # steps without a new best before the step size is halved, from the best iterate
_BETA1, _BETA2, _EPSILON = 0.9, 0.999, 1e-8


class Refiner:
    """Adam on one tile's latents at a time, one compiled step per (latent shape, η).

    Parameters
    ----------
    model : TunableAutoencoder
        A model trained for rate (it has a prior; :func:`refusal` says why others are refused).
    steps : int
        Adam steps per tile and η (≥ 1).
    softening : float, optional
        The data's asinh softening, for a model whose loss has a flux term.
    learning_rate : float
        Adam's first step, in latent units; halved after :data:`PATIENCE` steps without a new
        best, so a step too large for the model costs steps, not the result.
    """

    def __init__(self, model, steps: int, softening=None, learning_rate: float = LEARNING_RATE):
        if int(steps) < 1:
            raise ValueError(f"refinement needs at least one step, got {steps}")
        problem = refusal(model.model_config)
        if problem:
            raise ValueError(problem)
        self.model, self.steps, self.softening = model, int(steps), softening
        self.learning_rate = float(learning_rate)
        self._state: dict[tuple, tuple] = {}

    def _compiled(self, shape: tuple):
        """(variables, step function, loss function) for latents of ``shape`` (1, …, η)."""
        import tensorflow as tf

        if shape in self._state:
            return self._state[shape]
        y, m, v = (tf.Variable(tf.zeros(shape, tf.float32), trainable=False) for _ in range(3))
        t = tf.Variable(0.0, trainable=False)
        rate = tf.Variable(self.learning_rate, trainable=False)
        model, softening = self.model, self.softening

        @tf.function
        def loss(x):
            return model.coding_loss(x, y, softening)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(y)
                value = model.coding_loss(x, y, softening)
            g = tape.gradient(value, y)
            t.assign_add(1.0)
            m.assign(_BETA1 * m + (1.0 - _BETA1) * g)
            v.assign(_BETA2 * v + (1.0 - _BETA2) * tf.square(g))
            m_hat = m / (1.0 - tf.pow(_BETA1, t))
            v_hat = v / (1.0 - tf.pow(_BETA2, t))
            y.assign_sub(rate * m_hat / (tf.sqrt(v_hat) + _EPSILON))
            return value  # of y before the update

        self._state[shape] = ((y, m, v, t, rate), step, loss)
        return self._state[shape]

    def symbols(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Integers (…, η) for one normalized tile ``x`` (H, W) from its encoder latents ``z`` (…, η).

        Returns the integers and the objective before and after (the after is ≤ the before).
        After :data:`PATIENCE` steps without a new best, Adam restarts from the best iterate with
        half the step: a model whose objective is steep in its latents (a finer latent grid) gains
        nothing at the default step, which moves every latent at once.
        """
        import tensorflow as tf

        (y, m, v, t, rate), step, loss = self._compiled((1,) + tuple(z.shape))
        tile = tf.constant(np.asarray(x, np.float32)[None, ..., None])
        y.assign(np.asarray(z, np.float32)[None])
        rate.assign(self.learning_rate)

        def restart():
            m.assign(tf.zeros_like(m))
            v.assign(tf.zeros_like(v))
            t.assign(0.0)

        restart()
        start = best = float(loss(tile))
        best_y, stalled = y.numpy(), 0
        for _ in range(self.steps):
            before = y.numpy()
            value = float(step(tile))
            if value < best:
                best, best_y, stalled = value, before, 0
            else:
                stalled += 1
            if stalled == PATIENCE:
                y.assign(best_y)
                rate.assign(rate * 0.5)
                restart()
                stalled = 0
        last = float(loss(tile))
        if last < best:
            best, best_y = last, y.numpy()
        return np.rint(best_y[0]).astype(np.int64), start, best


def refusal(model_config) -> str | None:
    """Why a model of this config cannot be refined, or None: read from the config alone, so a
    caller can refuse before it loads or freezes the model (which may fit tables for minutes)."""
    if model_config.rate_lambda is None:
        return ("refinement needs a model trained for rate (model.rate_lambda): it descends the bits "
                "under the model's prior, and this model has none")
    return None


def refiner_for(model, data_cfg, steps: int):
    """A :class:`Refiner` of ``steps`` for a model and its data config, or None when ``steps`` is 0.

    ValueError (one line) for a negative count or a model not trained for rate.
    """
    if int(steps) == 0:
        return None
    if int(steps) < 0:
        raise ValueError(f"--refine must be >= 0 steps, got {steps}")
    softening = data_cfg.asinh_softening if data_cfg.normalization == "asinh" else None
    return Refiner(model, int(steps), softening)
