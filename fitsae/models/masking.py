"""Tunable rate: draw η in the graph and keep only the first η latent units or channels.

Every random number here comes from ``tf.random.stateless_*`` with a seed derived from
(global seed, rank, step, purpose). That makes three things true at once: η changes from step to
step (the seed notebooks drew it with Python's ``random`` inside a traced ``train_step``, so it
was frozen at trace time for the whole run), every Horovod rank draws its own η, and a resumed run
draws exactly the η an uninterrupted one would.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["PURPOSE", "step_seed", "sample_eta", "latent_mask", "apply_mask"]

# Independent streams per use of randomness, so adding a new random draw never shifts the others.
PURPOSE = {"eta": 1, "noise": 2, "beta": 3, "images": 4, "quantize": 5}


def step_seed(seed, rank, step, purpose: str | int) -> tf.Tensor:
    """A stateless-RNG seed (shape [2], int32) unique to (seed, rank, step, purpose)."""
    tag = PURPOSE[purpose] if isinstance(purpose, str) else int(purpose)
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(tag, tf.int64)])
    base = tf.random.experimental.stateless_fold_in(base, tf.cast(rank, tf.int64))
    return tf.random.experimental.stateless_fold_in(base, tf.cast(step, tf.int64))


def sample_eta(
    seed: tf.Tensor,
    batch_size,
    channels: int,
    distribution: str = "uniform",
    per: str = "batch",
    eta_min: int = 1,
    geometric_p: float = 0.2,
) -> tf.Tensor:
    """Draw η ∈ [eta_min, channels] as int32 of shape (batch_size,).

    Parameters
    ----------
    seed : tf.Tensor
        Stateless seed from :func:`step_seed`.
    batch_size : int or scalar tensor
        Examples in the batch; with ``per="batch"`` all share one η.
    channels : int
        C, the number of latent units/channels.
    distribution : {"uniform", "geometric", "log_uniform_ratio"}
        ``uniform`` over eta_min..C; ``geometric`` P(k) ∝ p(1-p)^(k-eta_min), truncated at C (the
        nested-dropout prior); ``log_uniform_ratio``: log η uniform on [log eta_min, log(C+1)), i.e.
        log-uniform in the compression ratio pixels/(η·positions).
    per : {"batch", "example"}
    """
    n = tf.ones([], tf.int32) if per == "batch" else tf.cast(batch_size, tf.int32)
    lo, hi = int(eta_min), int(channels)
    if distribution == "uniform":
        eta = tf.random.stateless_uniform([n], seed, minval=lo, maxval=hi + 1, dtype=tf.int32)
    elif distribution == "geometric":
        # Inverse CDF of the geometric law truncated to `hi - lo + 1` values.
        q = 1.0 - geometric_p
        u = tf.random.stateless_uniform([n], seed, dtype=tf.float64)
        u = u * (1.0 - q ** (hi - lo + 1))
        k = tf.math.floor(tf.math.log1p(-u) / math.log(q))
        eta = lo + tf.cast(k, tf.int32)
    elif distribution == "log_uniform_ratio":
        u = tf.random.stateless_uniform([n], seed, minval=math.log(lo), maxval=math.log(hi + 1), dtype=tf.float64)
        eta = tf.cast(tf.math.floor(tf.exp(u)), tf.int32)
    else:
        raise ValueError(f"unknown eta distribution {distribution!r}")
    eta = tf.clip_by_value(eta, lo, hi)
    if per == "batch":
        eta = tf.fill(tf.reshape(tf.cast(batch_size, tf.int32), [1]), eta[0])
    return eta


def latent_mask(eta: tf.Tensor, channels: int, rank: int, dtype=tf.float32) -> tf.Tensor:
    """1 for the first η units/channels of each example, 0 for the rest.

    Shape (B, C) for a dense latent (``rank=2``) or (B, 1, 1, C) for a conv latent (``rank=4``),
    so a conv mask drops the same channels at every position.
    """
    keep = tf.range(channels, dtype=tf.int32)[tf.newaxis, :] < tf.cast(eta, tf.int32)[:, tf.newaxis]
    mask = tf.cast(keep, dtype)
    if rank == 4:
        mask = mask[:, tf.newaxis, tf.newaxis, :]
    return mask


def apply_mask(z: tf.Tensor, eta: tf.Tensor) -> tf.Tensor:
    """``z`` with everything beyond the first η units/channels (last axis) set to zero."""
    return z * latent_mask(eta, z.shape[-1], len(z.shape), z.dtype)
