"""The tile table of a manifest and who reads which tile: origins, epoch order, each rank's share.

Contract: :class:`TileTable` lists every tile (manifest row, origin y, x) in index order, in plain
numpy; the training order of an epoch is a seeded permutation that depends only on
``(seed, epoch)`` — never on the number of steps run before — so a resumed run and every rank see
the same global order. Within an epoch rank ``r`` of ``size`` takes every ``size``-th tile of the
first ``steps_per_epoch × batch_size × size``; evaluation gives rank ``r`` tiles ``r, r + size, ...``.
The permutation is drawn with TensorFlow's stateless ops (imported when used) because the training
stream draws it in the graph; changing the generator would change every run's order.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from fitsae.data.manifest import Manifest, tile_origins
from fitsae.errors import FitsaeError

__all__ = ["PipelineError", "TileTable", "stateless_seed", "epoch_order_dataset"]

log = logging.getLogger("fitsae")


class PipelineError(FitsaeError, ValueError):
    """The manifest and config cannot make the requested batches; the message says why."""


class TileTable:
    """Every tile of ``manifest`` under ``data_cfg``, and the per-rank arithmetic of sharding them.

    Attributes
    ----------
    tile_row, tile_y, tile_x : int64 arrays (n_tiles,)
        Manifest row and origin of each tile (origins may be negative with ``data.edge=pad``).
    n_tiles : int
    steps_per_epoch : int
        Batches per rank per epoch, identical on every rank.
    per_rank : int
        Tiles per rank per epoch (``steps_per_epoch × batch_size``).
    """

    def __init__(self, manifest: Manifest, data_cfg, size: int = 1):
        cfg = data_cfg
        stride = cfg.tile_stride
        tile_row, tile_y, tile_x, too_small = [], [], [], []
        for i, row in enumerate(manifest):
            oy = tile_origins(row.height, cfg.tile, stride, cfg.edge)
            ox = tile_origins(row.width, cfg.tile, stride, cfg.edge)
            if not oy or not ox:
                too_small.append(row)
                continue
            grid_y, grid_x = np.meshgrid(oy, ox, indexing="ij")
            tile_row.append(np.full(grid_y.size, i, np.int64))
            tile_y.append(grid_y.ravel())
            tile_x.append(grid_x.ravel())
        if too_small:
            log.warning("%d image plane(s) smaller than the %dx%d tile are left out (set data.tile smaller or "
                        "data.edge=pad), e.g. %s HDU %d (%dx%d)", len(too_small), cfg.tile, cfg.tile,
                        too_small[0].path, too_small[0].hdu, too_small[0].height, too_small[0].width)
        if not tile_row:
            raise PipelineError(f"no tiles: the manifest has {len(manifest)} image planes, none at least "
                                f"{cfg.tile}x{cfg.tile} pixels")
        self.tile_row = np.concatenate(tile_row)
        self.tile_y = np.concatenate(tile_y).astype(np.int64)
        self.tile_x = np.concatenate(tile_x).astype(np.int64)
        self.n_tiles = int(self.tile_row.size)
        self.size = int(size)
        self.steps_per_epoch = self.n_tiles // (cfg.batch_size * size)
        self.per_rank = self.steps_per_epoch * cfg.batch_size

    def evaluation_share(self, rank: int) -> np.ndarray:
        """Tile ids rank ``rank`` evaluates, in index order: ``rank, rank + size, ...``."""
        return np.arange(rank, self.n_tiles, self.size, dtype=np.int64)

    def training_share(self, order: np.ndarray, rank: int) -> np.ndarray:
        """Tile ids rank ``rank`` trains on in an epoch of global ``order`` (the remainder dropped)."""
        return order[: self.per_rank * self.size][rank::self.size]


def stateless_seed(seed: int, stream: int, a, b):
    """The stateless-op seed of draw ``(a, b)`` = (epoch, position) of random stream ``stream``."""
    import tensorflow as tf

    return tf.stack([tf.constant(seed * 4 + stream, tf.int64),
                     tf.cast(a, tf.int64) * (1 << 32) + tf.cast(b, tf.int64)])


def _permutation(seed: int, n, stream, a, b):
    import tensorflow as tf

    keys = tf.random.stateless_uniform([n], seed=stateless_seed(seed, stream, a, b), minval=None, maxval=None,
                                       dtype=tf.int64)
    return tf.argsort(keys, stable=True)


def epoch_order_dataset(seed: int, n: int, block: int, epoch):
    """Dataset of the global tile order of ``epoch`` (identical on every rank).

    With ``block`` (``data.shuffle_buffer``) smaller than ``n``, blocks of consecutive tiles are
    visited in random order and shuffled within, so reads stay local.
    """
    import tensorflow as tf

    if block == 0 or block >= n:
        return tf.data.Dataset.from_tensor_slices(tf.cast(_permutation(seed, n, 0, epoch, 0), tf.int64))
    n_blocks = math.ceil(n / block)

    def block_tiles(b):
        start = b * block
        length = tf.minimum(tf.constant(n, tf.int64) - start, block)
        inner = tf.cast(_permutation(seed, tf.cast(length, tf.int32), 2, epoch, b + 1), tf.int64)
        return tf.data.Dataset.from_tensor_slices(start + inner)

    blocks = tf.cast(_permutation(seed, n_blocks, 1, epoch, 0), tf.int64)
    return tf.data.Dataset.from_tensor_slices(blocks).flat_map(block_tiles)
