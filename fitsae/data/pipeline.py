"""The tf.data pipeline: rank-sharded, deterministic, native FITS decode, normalized batches.

Flow per rank (nothing is decoded before it is known to belong to this rank)::

    epoch e ─ seeded permutation of all tiles ─ drop remainder ─ this rank's share ─ skip (resume)
            ─ parallel read (+ per-tile decode) ─ skip unreadable ─ end-of-epoch check ─ batch
            ─ batch decode + fill + normalize (XLA kernel) ─ prefetch

- **Sharding.** Every rank computes the same global order of tiles for epoch ``e`` (stateless
  random ops seeded by ``(seed, e)``), keeps the first ``steps_per_epoch × batch_size × size``
  and takes every ``size``-th tile from position ``rank``. So within an epoch no two ranks see
  the same tile, all ranks run the same number of steps (Horovod collectives would hang
  otherwise), and the ``N mod (batch_size × size)`` tiles left out differ from epoch to epoch
  (rule: *drop*). Evaluation instead gives rank ``r`` tiles ``r, r+size, ...`` in index order:
  every tile exactly once, shares differing by at most one tile.
- **Exact resume.** ``training(start_step)`` starts at epoch ``start_step // steps_per_epoch`` and
  skips the first ``start_step % steps_per_epoch`` batches' worth of tile *indices* (no decoding),
  so a resumed run sees the batches an uninterrupted run would. Random crops are drawn with
  stateless ops seeded by ``(seed, epoch, position)``, independent of what ran before.
- **Reading.** Small files are read whole by ``tf.io.read_file``; planes of cubes and tiles of
  mosaics are read with a ranged ``os.pread`` of just their rows (``data.whole_file_max_ratio``;
  a small ``tf.numpy_function``, as TensorFlow has no ranged-read op); both are decoded natively
  (:mod:`fitsae.io.native`, bit-exact with astropy).
  Tile-compressed HDUs and gzip files go through astropy in ``tf.numpy_function``. Per-rank
  memory is the prefetch depth plus a few tiles per reader thread, independent of the dataset.
- **Vectorized work.** Per tile only the read runs; normalization parameters are looked up and
  filling NaN/BLANK pixels and normalizing run once per batch, in one XLA-compiled kernel. When
  all planes share one decode rule — whole files of one shape (survey cut-outs, simulations) or
  ranged reads (cube planes, mosaic tiles) — the decode runs there too: the bytes become
  integers with a plain copy and XLA fuses the byte swap with the rest (big-endian
  ``decode_raw`` reverses bytes element by element, several times slower). BSCALE/BZERO
  arithmetic stays outside XLA, which would fuse it into multiply-adds and change the last bit
  (:mod:`fitsae.io.native`); results are bit-identical to the per-tile path and to astropy.
- **Bad files at run time.** A file deleted, truncated or made unreadable after indexing does not
  stop training: its tiles are dropped from the stream (the infinite training stream just pulls
  the next tile), counted in :attr:`Pipeline.skipped`, and logged once per file on the
  ``fitsae`` logger. If a whole epoch's share of this rank (or, in evaluation, all of it) could
  not be read, the stream fails with an error saying so instead of waiting forever for a batch.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading

import numpy as np

from fitsae.data.config import DataConfig
from fitsae.data.manifest import Manifest, tile_origins
from fitsae.data.normalize import image_parameters, standardize, stretch
from fitsae.io.native import FLOAT32_EXACT, WORD_DTYPES, decode_tf, decode_words_tf, physical_tf, swap_words_tf
from fitsae.io.read import read_raw_region, read_region_astropy

__all__ = ["Pipeline", "PipelineError"]

log = logging.getLogger("fitsae")

WHOLE, RANGED, ASTROPY = 0, 1, 2
_INT64_MAX = np.iinfo(np.int64).max


class PipelineError(ValueError):
    """The manifest and config cannot make the requested batches; the message says why."""


def stall_message(error_text: str) -> str | None:
    """The plain-language part of the error :meth:`Pipeline._stall_check` raises, or None.

    TensorFlow wraps an in-graph assertion in node names and brackets; callers that catch it
    (the training loop) show the user only what the pipeline meant to say.
    """
    match = re.search(r"\[(fitsae data pipeline[^\]]*)\] \[(\d+)\] \[(.*?\(fitsae index\)\.)\]", error_text, re.S)
    if match is None:
        return None
    return f"{match.group(1)} {match.group(2)} {match.group(3)}".replace("\\'", "'")


def _ranged_read(path, offset, width, itemsize, y0, y1, x0, x1):
    data = read_raw_region(path.decode(), int(offset), int(width), int(itemsize),
                           int(y0), int(y1), int(x0), int(x1))
    # A 0-d object array keeps trailing NUL bytes, which numpy's fixed-width bytes would strip.
    return np.array(data, dtype=object)


def _ranged_window(path, offset, width, itemsize, y0, y1, x0, x1):
    # Bytes as a uint8 array: handing TensorFlow a numeric array is measured ~1.6x cheaper than a string.
    return np.frombuffer(read_raw_region(path.decode(), int(offset), int(width), int(itemsize),
                                         int(y0), int(y1), int(x0), int(x1)), np.uint8)


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
        self.skipped = 0
        self._warned: set[str] = set()
        self._order_cache: tuple = (None, None)
        self._lock = threading.Lock()
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
        per_step = cfg.batch_size * size
        self.steps_per_epoch = self.n_tiles // per_step
        self._per_rank = self.steps_per_epoch * cfg.batch_size
        self._dtype = "float32" if all(r.dtype in FLOAT32_EXACT for r in manifest) else "float64"
        self._build_tables()

    # -- tables ---------------------------------------------------------------------------------
    def _strategy(self, row) -> int:
        if row.compressed or row.data_offset is None:
            return ASTROPY
        needed = min(row.height, self.cfg.tile) * min(row.width, self.cfg.tile) * abs(row.bitpix) // 8
        if row.file_size <= max(self.cfg.whole_file_max_ratio * needed, self.cfg.whole_file_min_bytes):
            return WHOLE
        return RANGED  # a plane of a cube or a tile of a mosaic: read only its rows

    def _build_tables(self):
        import tensorflow as tf

        rows = self.manifest.rows
        branches, branch_of_row = [], []
        for row in rows:
            strategy = self._strategy(row)
            key = (strategy, None) if strategy == ASTROPY else (strategy, row.spec.key)
            if key not in branches:
                branches.append(key)
            branch_of_row.append(branches.index(key))
        self._branches = [(s, None if s == ASTROPY else next(r.spec for r in rows if r.spec.key == k))
                          for s, k in branches]
        # The common case — one decode rule, planes read whole (same shape) or windows read by
        # ranged reads (cube planes, mosaic tiles) — is decoded a batch at a time: per tile only
        # the read remains, everything else is one compiled kernel per batch.
        specs, shapes = {r.spec for r in rows}, {r.shape for r in rows}
        self._vectorized = self.vectorize and (
            len(branches) == 1 and branches[0][0] in (WHOLE, RANGED) and len(specs) == 1
            and (branches[0][0] == RANGED or len(shapes) == 1) and self.cfg.edge != "pad"
        )
        if self._vectorized:
            spec = self._branches[0][1]
            offsets = {r.data_offset for r in rows}
            # Whole files whose data all start at one offset decode straight from the file bytes;
            # otherwise each example's data are cut out first (tf.strings.substr, one more copy).
            self._common_start = (offsets.pop() if len(offsets) == 1 and rows[0].data_offset % spec.itemsize == 0
                                  else None)
            self._marker_bytes = 0 if self._common_start is not None or branches[0][0] == RANGED else (
                max(r.data_offset for r in rows) + rows[0].height * rows[0].width * spec.itemsize)
        # Integers decoded without BLANK can hold no NaN; only floats, BLANK, astropy and padding can.
        self._may_have_holes = self.cfg.edge == "pad" or any(
            r.compressed or r.bitpix < 0 or r.spec.mode == "scale" for r in rows)
        params = [image_parameters(r.offset, r.noise, self.cfg.normalization) for r in rows]
        fill = [r.offset if self.cfg.fill == "offset" else 0.0 for r in rows]
        self._t = {
            "path": tf.constant([r.path for r in rows]),
            "branch": tf.constant(branch_of_row, tf.int32),
            "data_offset": tf.constant([r.data_offset if r.data_offset is not None else -1 for r in rows], tf.int64),
            "height": tf.constant([r.height for r in rows], tf.int64),
            "width": tf.constant([r.width for r in rows], tf.int64),
            "hdu": tf.constant([r.hdu for r in rows], tf.int64),
            "plane": tf.constant([r.plane for r in rows], tf.int64),
            "naxis": tf.constant([r.naxis for r in rows], tf.int64),
            "bscale": tf.constant([r.bscale for r in rows], tf.float64),
            "bzero": tf.constant([r.bzero for r in rows], tf.float64),
            "blank": tf.constant([r.blank if r.blank is not None else 0 for r in rows], tf.int64),
            "offset": tf.constant([p[0] for p in params], tf.float32),
            "scale": tf.constant([p[1] for p in params], tf.float32),
            "noise": tf.constant([p[2] for p in params], tf.float32),
            "fill": tf.constant(fill, tf.float64),
            "tile_row": tf.constant(self.tile_row, tf.int64),
            "tile_y": tf.constant(self.tile_y, tf.int64),
            "tile_x": tf.constant(self.tile_x, tf.int64),
        }

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
        """Whole tiles ``tile_ids`` (an evaluation batch's ``"tile_id"``) read straight from their files.

        Parameters
        ----------
        tile_ids : array of int
        plane : {"image", "truth"}
            ``image``: the plane's own pixels as astropy gives them — unfilled, unnormalized, the
            stored values exactly (what a classical codec would compress). ``truth``: its
            noiseless ``TRUTH`` plane; NaN for a plane without one.

        Returns
        -------
        float64 array (B, S, S), S = ``data.tile``, physical units, aligned pixel for pixel with
        the tiles :meth:`evaluation` yields; NaN outside the image (``data.edge=pad``). Read
        through astropy outside the tf.data graph: only evaluation needs it, once per tile.
        """
        if plane not in ("image", "truth"):
            raise ValueError(f"plane must be 'image' or 'truth', not {plane!r}")
        size = self.cfg.tile
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        out = np.full((ids.size, size, size), np.nan)
        for i, tile in enumerate(ids):
            row = self.manifest[int(self.tile_row[tile])]
            hdu = row.hdu if plane == "image" else row.truth_hdu
            if hdu is None:
                continue
            ry, rx = int(self.tile_y[tile]), int(self.tile_x[tile])
            y0, x0 = max(ry, 0), max(rx, 0)
            y1, x1 = min(ry + size, row.height), min(rx + size, row.width)
            out[i, y0 - ry:y1 - ry, x0 - rx:x1 - rx] = read_region_astropy(
                row.path, hdu, row.plane, row.naxis, y0, y1, x0, x1)
        return out

    # -- order ----------------------------------------------------------------------------------
    def _seed(self, stream: int, a, b):
        import tensorflow as tf

        # (experiment seed, stream) picks the random stream; (a, b) = (epoch, position) the draw.
        return tf.stack([tf.constant(self.seed * 4 + stream, tf.int64),
                         tf.cast(a, tf.int64) * (1 << 32) + tf.cast(b, tf.int64)])

    def _permutation(self, n, stream, a, b):
        import tensorflow as tf

        keys = tf.random.stateless_uniform([n], seed=self._seed(stream, a, b), minval=None, maxval=None, dtype=tf.int64)
        return tf.argsort(keys, stable=True)

    def _epoch_order(self, epoch):
        """Dataset of the epoch's global tile order (identical on every rank)."""
        import tensorflow as tf

        n, block = self.n_tiles, self.cfg.shuffle_buffer
        if block == 0 or block >= n:
            return tf.data.Dataset.from_tensor_slices(tf.cast(self._permutation(n, 0, epoch, 0), tf.int64))
        n_blocks = math.ceil(n / block)

        def block_tiles(b):
            start = b * block
            length = tf.minimum(tf.constant(n, tf.int64) - start, block)
            inner = tf.cast(self._permutation(tf.cast(length, tf.int32), 2, epoch, b + 1), tf.int64)
            return tf.data.Dataset.from_tensor_slices(start + inner)

        blocks = tf.cast(self._permutation(n_blocks, 1, epoch, 0), tf.int64)
        return tf.data.Dataset.from_tensor_slices(blocks).flat_map(block_tiles)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global tile order of ``epoch`` (all tiles, before dropping the remainder), eagerly."""
        return np.fromiter(self._epoch_order(epoch).as_numpy_iterator(), np.int64, self.n_tiles)

    def shard(self, epoch: int) -> np.ndarray:
        """Tile ids this rank trains on in ``epoch``, in order (for inspection and tests)."""
        return self.epoch_order(epoch)[: self._per_rank * self.size][self.rank::self.size]

    # -- reading --------------------------------------------------------------------------------
    def _read_region(self, row, y0, y1, x0, x1):
        """Physical pixels ``[y0:y1, x0:x1]`` (inside the image) of manifest row ``row``."""
        import tensorflow as tf

        t = self._t
        g = lambda name: tf.gather(t[name], row)  # noqa: E731 - a local shorthand
        path, width, offset = g("path"), g("width"), g("data_offset")
        dtype = tf.as_dtype(self._dtype)

        def make_branch(strategy, spec):
            def whole():
                content = tf.io.read_file(path)
                nb = spec.itemsize
                raw = tf.strings.substr(content, offset + y0 * width * nb, (y1 - y0) * width * nb)
                values = decode_tf(raw, spec, g("bscale"), g("bzero"), g("blank"))
                return tf.cast(tf.reshape(values, tf.stack([y1 - y0, width]))[:, x0:x1], dtype)

            def ranged():
                raw = tf.numpy_function(_ranged_read, [path, offset, width, tf.constant(spec.itemsize, tf.int64),
                                                       y0, y1, x0, x1], tf.string, stateful=False)
                values = decode_tf(raw, spec, g("bscale"), g("bzero"), g("blank"))
                return tf.cast(tf.reshape(values, tf.stack([y1 - y0, x1 - x0])), dtype)

            def fallback():
                values = tf.numpy_function(self._astropy_read, [path, g("hdu"), g("plane"), g("naxis"), y0, y1, x0, x1],
                                           dtype, stateful=False)
                return tf.reshape(values, tf.stack([y1 - y0, x1 - x0]))

            return {WHOLE: whole, RANGED: ranged, ASTROPY: fallback}[strategy]

        fns = [make_branch(s, spec) for s, spec in self._branches]
        if len(fns) == 1:
            return fns[0]()
        return tf.switch_case(g("branch"), fns)

    def _astropy_read(self, path, hdu, plane, naxis, y0, y1, x0, x1):
        data = read_region_astropy(path.decode(), int(hdu), int(plane), int(naxis), int(y0), int(y1), int(x0), int(x1))
        return np.asarray(data, dtype=self._dtype)

    def _example(self, tile, ry, rx, size, seq):
        """What the parallel readers produce for the ``size × size`` window at (ry, rx) of tile ``tile``.

        Vectorized: raw bytes — the whole file (``content``, a string) or just the window (``window``,
        uint8, from a ranged read) — left for :meth:`_finish` to decode a batch at a time. Otherwise: physical pixels (``phys``, NaN
        outside the image). Everything that does not need the file (normalization parameters,
        fill values) is looked up per batch, keeping the per-tile work to the read itself.
        """
        import tensorflow as tf

        t = self._t
        row = tf.gather(t["tile_row"], tile)
        common = {"tile_id": tf.cast(tile, tf.int64), "_seq": seq}
        if self._vectorized:
            strategy, spec = self._branches[0]
            path = tf.gather(t["path"], row)
            if strategy == RANGED:
                window = tf.numpy_function(
                    _ranged_window, [path, tf.gather(t["data_offset"], row), tf.gather(t["width"], row),
                                     tf.constant(spec.itemsize, tf.int64), ry, ry + size, rx, rx + size],
                    tf.uint8, stateful=False)
                return {"window": tf.ensure_shape(window, [size * size * spec.itemsize]), **common}
            height, width = self.manifest[0].shape
            content = tf.io.read_file(path)
            # A file truncated since indexing must fail here, per tile, not later for the whole batch.
            check = tf.debugging.assert_greater_equal(
                tf.cast(tf.strings.length(content), tf.int64),
                tf.gather(t["data_offset"], row) + height * width * spec.itemsize,
                message="file shorter than the manifest says")
            with tf.control_dependencies([check]):
                content = tf.identity(content)
            return {"content": content, "ry": ry, "rx": rx, **common}
        height, width = tf.gather(t["height"], row), tf.gather(t["width"], row)
        y0, x0 = tf.clip_by_value(ry, 0, height), tf.clip_by_value(rx, 0, width)
        y1, x1 = tf.clip_by_value(ry + size, 0, height), tf.clip_by_value(rx + size, 0, width)
        phys = self._read_region(row, y0, y1, x0, x1)
        dtype = phys.dtype
        if self.cfg.edge == "pad":
            phys = tf.pad(phys, [[y0 - ry, ry + size - y1], [x0 - rx, rx + size - x1]],
                          constant_values=tf.constant(np.nan, dtype))
        phys = tf.ensure_shape(phys, [size, size])
        return {"phys": phys, **common}

    def _kernels(self, size):
        """XLA-compiled batch kernels: ``decode(words, ry, rx, fill, offset, scale)`` and
        ``standardize(phys, fill, offset, scale)``, both → standardized pixels (B, size, size).

        XLA fuses byte swapping, window cutting, the cast, filling and ``(p - offset) / scale``
        into one or two passes over the batch; as separate TensorFlow ops each is a pass of its
        own, and this is most of the per-image cost once reading is done. Float arithmetic
        that XLA would contract into fused multiply-adds (BSCALE/BZERO) stays outside it, so
        the values stay bit-identical to astropy's (see :func:`fitsae.io.native.physical_tf`).
        """
        import tensorflow as tf

        dtype = tf.as_dtype(self._dtype)
        holes = self._may_have_holes
        # (x − 0) / 1 is the identity but not bit for bit: TensorFlow's CPU kernels flush float32
        # subnormals to zero. With normalization "none" the pixels get no arithmetic at all.
        identity = self.cfg.normalization == "none"

        def finish(phys, fill, offset, scale):
            phys = tf.cast(phys, dtype)
            if holes:
                phys = tf.where(tf.math.is_finite(phys), phys, tf.cast(fill, dtype)[:, None, None])
            if identity:
                return phys
            return standardize(phys, offset[:, None, None], scale[:, None, None])

        standardize_kernel = tf.function(finish, jit_compile=True)
        if not self._vectorized:
            return None, standardize_kernel
        strategy, spec = self._branches[0]
        height, width = self.manifest[0].shape

        def values(words, ry, rx):
            if strategy == RANGED:  # the reads returned exactly the windows
                return swap_words_tf(tf.reshape(words, [-1, size, size]), spec)
            start = (self._common_start or 0) // spec.itemsize
            words = tf.reshape(words[:, start:start + height * width], [-1, height, width])
            if size != height:
                words = tf.gather(words, ry[:, None] + tf.range(size, dtype=tf.int64), batch_dims=1)
            if size != width:
                words = tf.gather(words, rx[:, None] + tf.range(size, dtype=tf.int64), axis=2, batch_dims=1)
            return swap_words_tf(words, spec)

        if spec.mode == "scale":
            values_kernel = tf.function(values, jit_compile=True)

            def decode(words, ry, rx, fill, offset, scale):
                return standardize_kernel(physical_tf(values_kernel(words, ry, rx), spec), fill, offset, scale)
        else:
            decode = tf.function(lambda words, ry, rx, fill, offset, scale: finish(
                physical_tf(values(words, ry, rx), spec), fill, offset, scale), jit_compile=True)
        return decode, standardize_kernel

    def _words(self, batch, rows, size):
        """The vectorized path's batch of raw bytes as big-endian words (one copy)."""
        import tensorflow as tf

        strategy, spec = self._branches[0]
        if strategy == RANGED:
            window = batch.pop("window")
            if spec.itemsize == 1:
                return window
            return tf.bitcast(tf.reshape(window, [-1, size * size, spec.itemsize]), tf.as_dtype(WORD_DTYPES[spec.bitpix]))
        contents = batch.pop("content")
        height, width = self.manifest[0].shape
        nbytes = height * width * spec.itemsize
        if self._common_start is not None:
            return decode_words_tf(contents, spec, fixed_length=self._common_start + nbytes)
        start = tf.gather(self._t["data_offset"], rows)
        return decode_words_tf(tf.strings.substr(contents, start, tf.fill(tf.shape(start), tf.constant(nbytes, tf.int64))),
                               spec)

    def _finish(self, batch, size, kernels):
        """Decode (vectorized path), fill and normalize a whole batch at once."""
        import tensorflow as tf

        decode, standardize_kernel = kernels
        t = self._t
        # max(): the end marker of a finite stream (tile -1) is removed after this step.
        rows = tf.gather(t["tile_row"], tf.maximum(batch["tile_id"], 0))
        fill, offset, scale = (tf.gather(t[k], rows) for k in ("fill", "offset", "scale"))
        batch["offset"], batch["scale"], batch["noise"] = offset, scale, tf.gather(t["noise"], rows)
        if "phys" in batch:
            x = standardize_kernel(batch.pop("phys"), fill, offset, scale)
        else:
            ry, rx = batch.pop("ry", None), batch.pop("rx", None)
            if ry is None:
                ry = rx = tf.zeros_like(batch["tile_id"])
            x = decode(self._words(batch, rows, size), ry, rx, fill, offset, scale)
        batch["x"] = tf.cast(stretch(x, self.cfg), tf.float32)[..., None]
        return batch

    # -- skipping unreadable files --------------------------------------------------------------
    def _stall_check(self, dataset, first_seq, share, what):
        """Fail, naming the problem, when a whole ``share`` of consecutive tiles could not be read.

        Unreadable tiles are dropped before batching, so if every file is gone no batch ever
        arrives and training would wait forever. Markers (``tile_id`` -1, ``_seq`` one past the end
        of an epoch's share) come after each epoch's tiles and cannot fail; at a marker, the
        distance to the last tile that was read is the run of consecutive skips.
        """
        import tensorflow as tf

        limit = max(int(share), 1)
        manifest = self.manifest
        example = f"{manifest[0].path}" + (f" (and {len(manifest) - 1} other plane(s))" if len(manifest) > 1 else "")
        head = (f"fitsae data pipeline, rank {self.rank} of {self.size}: none of the last")
        tail = (f"tiles ({what}) could be read. The input files were deleted, moved, truncated or made "
                f"unreadable after indexing; the manifest lists {example}. Restore the files or index the "
                f"data again (fitsae index).")

        def step(last, element):
            marker = element["tile_id"] < 0
            skipped = element["_seq"] - last - 1
            check = tf.debugging.Assert(tf.logical_or(tf.logical_not(marker), skipped < limit), [head, skipped, tail])
            with tf.control_dependencies([check]):
                last = tf.where(marker, last, element["_seq"])
            return last, element

        return dataset.scan(tf.constant(first_seq - 1, tf.int64), step)

    def _batches(self, dataset, size, batch_size, first_seq, finite, locate):
        """Batch, decode and normalize; per batch, count and report the gaps skipped tiles left."""
        import tensorflow as tf

        kernels = self._kernels(size)
        dataset = dataset.batch(batch_size, drop_remainder=not finite)
        dataset = dataset.map(lambda batch: self._finish(batch, size, kernels), num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True)

        def report(prev, seqs):
            missing = np.setdiff1d(np.arange(int(prev) + 1, int(seqs[-1]) + 1), seqs)
            self._report_skipped([locate(int(s)) for s in missing])
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
                marker[key] = tf.constant(b"\0" * self._marker_bytes)
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

    def _report_skipped(self, tiles) -> None:
        with self._lock:
            self.skipped += len(tiles)
            for tile in tiles:
                row = self.manifest[int(self.tile_row[tile])]
                if row.path in self._warned:
                    continue
                self._warned.add(row.path)
                log.warning("skipping unreadable input %s HDU %d: %s; its tiles are skipped whenever they come "
                            "up (%d tile(s) skipped so far, see Pipeline.skipped)",
                            row.path, row.hdu, _diagnose(row), self.skipped)

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
                ry = tf.gather(self._t["tile_y"], tile) + shift[0]
                rx = tf.gather(self._t["tile_x"], tile) + shift[1]
                return self._example(tile, ry, rx, crop, epoch * per_rank + pos // size)

            tiles = order.map(element, num_parallel_calls=parallel, deterministic=True).ignore_errors()
            return self._with_marker(tiles, (epoch + 1) * per_rank)

        ds = tf.data.Dataset.range(epoch0, _INT64_MAX).flat_map(epoch_stream)
        ds = self._stall_check(ds, int(start_step) * B, per_rank, "a whole epoch's share of this rank")
        ds = ds.filter(lambda element: element["tile_id"] >= 0)
        ds = self._batches(ds, crop, B, int(start_step) * B, False, self._train_tile)
        return ds.prefetch(tf.data.AUTOTUNE)

    def evaluation(self, batch_size: int | None = None):
        """Finite dataset of whole tiles for this rank: tiles ``rank, rank+size, ...`` in index order.

        The last batch may be smaller; over all ranks every tile appears exactly once.
        """
        import tensorflow as tf

        B = int(batch_size or self.cfg.batch_size)
        tiles = np.arange(self.rank, self.n_tiles, self.size, dtype=np.int64)
        seqs = np.arange(tiles.size, dtype=np.int64)
        tile_size = self.cfg.tile

        def element(tile, seq):
            return self._example(tile, tf.gather(self._t["tile_y"], tile), tf.gather(self._t["tile_x"], tile),
                                 tile_size, seq)

        ds = tf.data.Dataset.from_tensor_slices((tiles, seqs))
        ds = ds.map(element, num_parallel_calls=self.cfg.parallel_reads or tf.data.AUTOTUNE, deterministic=True)
        # The marker one past the last tile also lets tiles lost at the very end leave a gap.
        ds = self._with_marker(ds.ignore_errors(), tiles.size)
        ds = self._stall_check(ds, 0, tiles.size, "all of this rank's evaluation tiles")
        ds = self._batches(ds, tile_size, B, 0, True, self._eval_tile)
        return ds.prefetch(tf.data.AUTOTUNE)


def _diagnose(row) -> str:
    """Best guess at why a manifest row cannot be read now (it could when it was indexed)."""
    try:
        size = os.stat(row.path).st_size
    except FileNotFoundError:
        return "the file no longer exists"
    except OSError as err:
        return f"cannot stat the file: {err.strerror or err}"
    if not os.access(row.path, os.R_OK):
        return "the file is not readable (permissions)"
    if size != row.file_size:
        return f"the file changed size since indexing ({row.file_size} → {size} bytes)"
    return "reading or decoding failed (the file changed since indexing?)"
