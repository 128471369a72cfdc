"""Training batches from an in-memory array, with the same interface as the FITS pipeline.

For quick experiments from Python (``train(cfg, run, data=ArrayData(images, ...))``), the
PCA-recovery test and the benchmark that measures what the FITS pipeline costs. Each step's batch
is a stateless random draw (with replacement) seeded by (seed, rank, step), so a resumed run sees
exactly the batches an uninterrupted one would and every rank sees different ones.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["ArrayData"]


class ArrayData:
    """Batches of normalized images held in memory.

    Parameters
    ----------
    images : array (N, H, W) or (N, H, W, 1)
        Already normalized (noise ≈ 1, background ≈ 0).
    batch_size : int
        Per rank.
    seed, rank, size : int
    noise : float
        Noise σ reported in the batch dict (normalized units).
    """

    def __init__(self, images, batch_size: int, seed: int = 0, rank: int = 0, size: int = 1, noise: float = 1.0):
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] != 1:
            raise ValueError(f"images must have shape (N, H, W) or (N, H, W, 1), got {images.shape}")
        self.images = tf.constant(images)
        self.batch_size = int(batch_size)
        self.seed, self.rank, self.size = int(seed), int(rank), int(size)
        self.noise = float(noise)
        self.steps_per_epoch = max(1, len(images) // (self.batch_size * self.size))

    def _batch(self, step):
        n = tf.shape(self.images, out_type=tf.int64)[0]
        seed = tf.random.experimental.stateless_fold_in(
            tf.constant([self.seed, self.rank], tf.int64), step
        )
        index = tf.random.stateless_uniform([self.batch_size], seed, minval=0, maxval=n, dtype=tf.int64)
        b = self.batch_size
        return {
            "x": tf.gather(self.images, index),
            "offset": tf.zeros([b], tf.float32),
            "scale": tf.ones([b], tf.float32),
            "noise": tf.fill([b], tf.constant(self.noise, tf.float32)),
            "tile_id": index,
        }

    def training(self, start_step: int = 0) -> tf.data.Dataset:
        """Infinite dataset of batch dicts starting at ``start_step``."""
        steps = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
        return steps.map(self._batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
