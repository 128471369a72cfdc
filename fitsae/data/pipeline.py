"""The tf.data pipeline: rank-sharded, deterministic, native FITS decode, normalized batches.

Flow per rank (nothing is decoded before it is known to belong to this rank)::

    epoch e ─ seeded permutation of all tiles ─ drop remainder ─ this rank's share ─ skip (resume)
            ─ parallel read (+ per-tile decode) ─ skip unreadable ─ end-of-epoch check ─ batch
            ─ batch decode + fill + normalize (XLA kernel) ─ prefetch

Contract: :meth:`Pipeline.training` resumes exactly — it starts at epoch ``start_step //
steps_per_epoch`` and skips tile *indices* (no decoding), with random crops seeded by
``(seed, epoch, position)``, so a resumed run sees the batches an uninterrupted one would; all
ranks run the same number of steps (Horovod collectives would hang otherwise).
:meth:`Pipeline.evaluation` yields every tile exactly once over all ranks. The tile table and
sharding live in :mod:`fitsae.data.tiles`, the read strategies in :mod:`fitsae.data.reading`,
unreadable files in :mod:`fitsae.data.skips`; this module composes them into the two datasets.
"""

from __future__ import annotations

import numpy as np

from fitsae.data.config import DataConfig
from fitsae.data.manifest import Manifest
from fitsae.data.reading import Reader
from fitsae.data.skips import SkipLedger, stall_check
from fitsae.data.tiles import PipelineError, TileTable, epoch_order_dataset, stateless_seed

__all__ = ["Pipeline", "PipelineError"]

_INT64_MAX = np.iinfo(np.int64).max


class Pipeline:
    """Training and evaluation datasets over a manifest, for one rank of ``size``.

    Parameters
    ----------
    manifest : Manifest
        From ``fitsae index`` / :func:`fitsae.data.manifest.index_paths`.
    data_cfg : DataConfig
        Tiling, crop, batch size, normalization.
    seed : int
        The experiment seed; the tile order and crops depend on it (and on the epoch), never on
        the number of previous iterations.
    rank, size : int
        This worker and the number of workers (``fitsae.distributed.workers()``).

    Attributes
    ----------
    steps_per_epoch : int
        Batches per rank per epoch, identical on every rank.
    n_tiles : int
        Tiles in the dataset under this config.
    skipped : int
        Tiles dropped so far because their file could not be read.
    """

    #: Decode a batch at a time when the data allow it; False forces the per-tile path (tests compare both).
    vectorize = True

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, seed: int = 0, rank: int = 0, size: int = 1):
        if not 0 <= rank < size:
            raise PipelineError(f"rank {rank} is outside 0..{size - 1}")
        self.manifest, self.cfg, self.seed, self.rank, self.size = manifest, data_cfg, int(seed), rank, size
        self._order_cache: tuple = (None, None)
        self.table = TileTable(manifest, data_cfg, size)
        self.tile_row, self.tile_y, self.tile_x = self.table.tile_row, self.table.tile_y, self.table.tile_x
        self.n_tiles, self.steps_per_epoch = self.table.n_tiles, self.table.steps_per_epoch
        self._per_rank = self.table.per_rank
        self.reader = Reader(manifest, data_cfg, self.table, self.vectorize)
        self._ledger = SkipLedger(manifest, self.tile_row)

    @property
    def skipped(self) -> int:
        """Tiles dropped so far because their file could not be read."""
        return self._ledger.skipped

    def tile_info(self, tile_id: int) -> dict:
        """Where tile ``tile_id`` (a batch's ``"tile_id"``) comes from: path, HDU, plane, y0, x0, size."""
        row = self.manifest[int(self.tile_row[tile_id])]
        return {"path": row.path, "hdu": row.hdu, "plane": row.plane, "y0": int(self.tile_y[tile_id]),
                "x0": int(self.tile_x[tile_id]), "size": self.cfg.tile, "row": int(self.tile_row[tile_id])}

    @property
    def has_truth(self) -> bool:
        """Whether any plane of the manifest has a ``TRUTH`` plane (simulated data)."""
        return any(row.truth_hdu is not None for row in self.manifest)

    def tile_pixels(self, tile_ids, plane: str = "image") -> np.ndarray:
        """Whole tiles read straight from their files (see :meth:`fitsae.data.reading.Reader.tile_pixels`)."""
        return self.reader.tile_pixels(tile_ids, plane)

    # -- order ----------------------------------------------------------------------------------
    def _seed(self, stream: int, a, b):
        return stateless_seed(self.seed, stream, a, b)

    def _epoch_order(self, epoch):
        """Dataset of the epoch's global tile order (identical on every rank)."""
        return epoch_order_dataset(self.seed, self.n_tiles, self.cfg.shuffle_buffer, epoch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global tile order of ``epoch`` (all tiles, before dropping the remainder), eagerly."""
        return np.fromiter(self._epoch_order(epoch).as_numpy_iterator(), np.int64, self.n_tiles)

    def shard(self, epoch: int) -> np.ndarray:
        """Tile ids this rank trains on in ``epoch``, in order (for inspection and tests)."""
        return self.table.training_share(self.epoch_order(epoch), self.rank)

    # -- batching -------------------------------------------------------------------------------
    def _batches(self, dataset, size, batch_size, first_seq, finite, locate):
        """Batch, decode and normalize; per batch, count and report the gaps skipped tiles left."""
        import tensorflow as tf

        kernels = self.reader.kernels(size)
        dataset = dataset.batch(batch_size, drop_remainder=not finite)
        dataset = dataset.map(lambda batch: self.reader.finish(batch, size, kernels), num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True)

        def report(prev, seqs):
            missing = np.setdiff1d(np.arange(int(prev) + 1, int(seqs[-1]) + 1), seqs)
            self._ledger.report([locate(int(s)) for s in missing])
            return np.int64(len(missing))

        def scan(prev, batch):
            seqs = batch.pop("_seq")
            gap = seqs[-1] - prev - tf.cast(tf.size(seqs), tf.int64)
            done = tf.cond(gap > 0,
                           lambda: tf.py_function(lambda p, s: report(p.numpy(), s.numpy()), [prev, seqs], tf.int64),
                           lambda: tf.constant(0, tf.int64))
            with tf.control_dependencies([done]):
                batch = {k: tf.identity(v) for k, v in batch.items()}
            return seqs[-1], batch

        dataset = dataset.scan(tf.constant(first_seq - 1, tf.int64), scan)
        if not finite:
            return dataset
        real = lambda batch: batch["tile_id"] >= 0  # noqa: E731
        dataset = dataset.map(lambda batch: {k: tf.boolean_mask(v, real(batch)) for k, v in batch.items()})
        return dataset.filter(lambda batch: tf.size(batch["tile_id"]) > 0)

    def _with_marker(self, dataset, seq):
        """``dataset`` followed by a marker: an element that decodes without error, tile_id -1, ``_seq`` = seq."""
        import tensorflow as tf

        marker = {}
        for key, s in dataset.element_spec.items():
            if key == "content":
                marker[key] = tf.constant(b"\0" * self.reader.marker_bytes)
            else:
                marker[key] = tf.zeros(s.shape, s.dtype)
        marker["tile_id"] = tf.constant(-1, tf.int64)
        marker["_seq"] = tf.cast(seq, tf.int64)
        return dataset.concatenate(tf.data.Dataset.from_tensors(marker))

    def _eval_tile(self, seq: int) -> int:
        return int(seq) * self.size + self.rank

    def _train_tile(self, seq: int) -> int:
        epoch, local = divmod(int(seq), self._per_rank)
        if self._order_cache[0] != epoch:
            self._order_cache = (epoch, self.epoch_order(epoch))
        return int(self._order_cache[1][local * self.size + self.rank])

    # -- public datasets ------------------------------------------------------------------------
    def training(self, start_step: int = 0):
        """Infinite dataset of training batches for this rank, starting at global step ``start_step``.

        Batches are dicts ``x`` (B, S, S, 1) float32, ``offset``/``scale``/``noise`` (B,) float32,
        ``tile_id`` (B,) int64, where S is ``data.crop`` or ``data.tile``.
        """
        import tensorflow as tf

        if self.steps_per_epoch == 0:
            raise PipelineError(
                f"{self.n_tiles} tiles cannot fill one batch of {self.cfg.batch_size} on each of {self.size} "
                f"rank(s): lower data.batch_size or add data")
        B, size, rank, per_rank = self.cfg.batch_size, self.size, self.rank, self._per_rank
        used = per_rank * size
        epoch0, skip_steps = divmod(int(start_step), self.steps_per_epoch)
        crop = self.cfg.crop or self.cfg.tile
        margin = self.cfg.tile - crop

        parallel = self.cfg.parallel_reads or tf.data.AUTOTUNE

        def epoch_stream(epoch):
            order = self._epoch_order(epoch).take(used).enumerate().shard(size, rank)
            # Resuming mid-epoch skips tile indices, before anything is read.
            order = order.skip(tf.where(epoch == epoch0, tf.constant(skip_steps * B, tf.int64), 0))

            def element(pos, tile):
                if margin:
                    shift = tf.random.stateless_uniform([2], seed=self._seed(3, epoch, pos), minval=0,
                                                        maxval=margin + 1, dtype=tf.int64)
                else:
                    shift = tf.zeros([2], tf.int64)
                ry = tf.gather(self.reader.tables["tile_y"], tile) + shift[0]
                rx = tf.gather(self.reader.tables["tile_x"], tile) + shift[1]
                return self.reader.example(tile, ry, rx, crop, epoch * per_rank + pos // size)

            tiles = order.map(element, num_parallel_calls=parallel, deterministic=True).ignore_errors()
            return self._with_marker(tiles, (epoch + 1) * per_rank)

        ds = tf.data.Dataset.range(epoch0, _INT64_MAX).flat_map(epoch_stream)
        ds = stall_check(ds, int(start_step) * B, per_rank, "a whole epoch's share of this rank",
                         self.manifest, self.rank, self.size)
        ds = ds.filter(lambda element: element["tile_id"] >= 0)
        ds = self._batches(ds, crop, B, int(start_step) * B, False, self._train_tile)
        return ds.prefetch(tf.data.AUTOTUNE)

    def evaluation(self, batch_size: int | None = None):
        """Finite dataset of whole tiles for this rank: tiles ``rank, rank+size, ...`` in index order.

        The last batch may be smaller; over all ranks every tile appears exactly once.
        """
        import tensorflow as tf

        B = int(batch_size or self.cfg.batch_size)
        tiles = self.table.evaluation_share(self.rank)
        seqs = np.arange(tiles.size, dtype=np.int64)
        tile_size = self.cfg.tile

        def element(tile, seq):
            return self.reader.example(tile, tf.gather(self.reader.tables["tile_y"], tile), tf.gather(self.reader.tables["tile_x"], tile),
                                 tile_size, seq)

        ds = tf.data.Dataset.from_tensor_slices((tiles, seqs))
        ds = ds.map(element, num_parallel_calls=self.cfg.parallel_reads or tf.data.AUTOTUNE, deterministic=True)
        # The marker one past the last tile also lets tiles lost at the very end leave a gap.
        ds = self._with_marker(ds.ignore_errors(), tiles.size)
        ds = stall_check(ds, 0, tiles.size, "all of this rank's evaluation tiles", self.manifest, self.rank,
                         self.size)
        ds = self._batches(ds, tile_size, B, 0, True, self._eval_tile)
        return ds.prefetch(tf.data.AUTOTUNE)


