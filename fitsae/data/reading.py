"""How tiles are read and turned into normalized batches: the read strategies and batch kernels.

Contract: a :class:`Reader` decodes any tile of a manifest to the same values astropy gives
(bit for bit), by one of three strategies per plane — the whole small file (``tf.io.read_file``),
a ranged ``os.pread`` of just the rows needed (planes of cubes, tiles of mosaics), or astropy for
tile-compressed and gzip files — and, when every plane shares one decode rule, decodes, fills and
normalizes a whole batch in one XLA kernel (per tile only the read remains). BSCALE/BZERO
arithmetic stays outside XLA, which would fuse it into multiply-adds and change the last bit.
"""

from __future__ import annotations

import numpy as np

from fitsae.data.config import DataConfig
from fitsae.data.manifest import Manifest
from fitsae.data.normalize import image_parameters, standardize, stretch
from fitsae.data.tiles import TileTable
from fitsae.io.native import FLOAT32_EXACT, WORD_DTYPES, decode_tf, decode_words_tf, physical_tf, swap_words_tf
from fitsae.io.read import read_raw_region, read_region_astropy

__all__ = ["Reader", "WHOLE", "RANGED", "ASTROPY"]

WHOLE, RANGED, ASTROPY = 0, 1, 2


def _ranged_read(path, offset, width, itemsize, y0, y1, x0, x1):
    data = read_raw_region(path.decode(), int(offset), int(width), int(itemsize),
                           int(y0), int(y1), int(x0), int(x1))
    # A 0-d object array keeps trailing NUL bytes, which numpy's fixed-width bytes would strip.
    return np.array(data, dtype=object)


def _ranged_window(path, offset, width, itemsize, y0, y1, x0, x1):
    # Bytes as a uint8 array: TensorFlow takes a numeric array more cheaply than a string (docs/measurements.md).
    return np.frombuffer(read_raw_region(path.decode(), int(offset), int(width), int(itemsize),
                                         int(y0), int(y1), int(x0), int(x1)), np.uint8)



class Reader:
    """Reads and decodes the tiles of ``table`` (over ``manifest`` under ``data_cfg``).

    ``vectorize`` False forces the per-tile path (tests compare both). :attr:`tables` holds the
    per-row and per-tile constants as tensors, :attr:`vectorized` whether batches decode at once.
    """

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, table: TileTable, vectorize: bool = True):
        self.manifest, self.cfg, self.table, self.vectorize = manifest, data_cfg, table, vectorize
        self._dtype = "float32" if all(r.dtype in FLOAT32_EXACT for r in manifest) else "float64"
        self._build_tables()

    def strategy(self, row) -> int:
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
            strategy = self.strategy(row)
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
        self.vectorized = self.vectorize and (
            len(branches) == 1 and branches[0][0] in (WHOLE, RANGED) and len(specs) == 1
            and (branches[0][0] == RANGED or len(shapes) == 1) and self.cfg.edge != "pad"
        )
        if self.vectorized:
            spec = self._branches[0][1]
            offsets = {r.data_offset for r in rows}
            # Whole files whose data all start at one offset decode straight from the file bytes;
            # otherwise each example's data are cut out first (tf.strings.substr, one more copy).
            self._common_start = (offsets.pop() if len(offsets) == 1 and rows[0].data_offset % spec.itemsize == 0
                                  else None)
            self.marker_bytes = 0 if self._common_start is not None or branches[0][0] == RANGED else (
                max(r.data_offset for r in rows) + rows[0].height * rows[0].width * spec.itemsize)
        # Integers decoded without BLANK can hold no NaN; only floats, BLANK, astropy and padding can.
        self._may_have_holes = self.cfg.edge == "pad" or any(
            r.compressed or r.bitpix < 0 or r.spec.mode == "scale" for r in rows)
        params = [image_parameters(r.median, r.noise, self.cfg.normalization) for r in rows]
        fill = [r.median if self.cfg.fill == "offset" else 0.0 for r in rows]
        self.tables = {
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
            "tile_row": tf.constant(self.table.tile_row, tf.int64),
            "tile_y": tf.constant(self.table.tile_y, tf.int64),
            "tile_x": tf.constant(self.table.tile_x, tf.int64),
        }


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
        the tiles :meth:`fitsae.data.pipeline.Pipeline.evaluation` yields; NaN outside the image
        (``data.edge=pad``). Read through astropy outside the tf.data graph: only evaluation needs
        it, once per tile.
        """
        if plane not in ("image", "truth"):
            raise ValueError(f"plane must be 'image' or 'truth', not {plane!r}")
        size = self.cfg.tile
        ids = np.asarray(tile_ids, np.int64).reshape(-1)
        out = np.full((ids.size, size, size), np.nan)
        for i, tile in enumerate(ids):
            row = self.manifest[int(self.table.tile_row[tile])]
            hdu = row.hdu if plane == "image" else row.truth_hdu
            if hdu is None:
                continue
            ry, rx = int(self.table.tile_y[tile]), int(self.table.tile_x[tile])
            y0, x0 = max(ry, 0), max(rx, 0)
            y1, x1 = min(ry + size, row.height), min(rx + size, row.width)
            out[i, y0 - ry:y1 - ry, x0 - rx:x1 - rx] = read_region_astropy(
                row.path, hdu, row.plane, row.naxis, y0, y1, x0, x1)
        return out

    def read_region(self, row, y0, y1, x0, x1):
        """Physical pixels ``[y0:y1, x0:x1]`` (inside the image) of manifest row ``row``."""
        import tensorflow as tf

        t = self.tables
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

    def example(self, tile, ry, rx, size, seq):
        """What the parallel readers produce for the ``size × size`` window at (ry, rx) of tile ``tile``.

        Vectorized: raw bytes — the whole file (``content``, a string) or just the window (``window``,
        uint8, from a ranged read) — left for :meth:`finish` to decode a batch at a time. Otherwise: physical pixels (``phys``, NaN
        outside the image). Everything that does not need the file (normalization parameters,
        fill values) is looked up per batch, keeping the per-tile work to the read itself.
        """
        import tensorflow as tf

        t = self.tables
        row = tf.gather(t["tile_row"], tile)
        common = {"tile_id": tf.cast(tile, tf.int64), "_seq": seq}
        if self.vectorized:
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
        phys = self.read_region(row, y0, y1, x0, x1)
        dtype = phys.dtype
        if self.cfg.edge == "pad":
            phys = tf.pad(phys, [[y0 - ry, ry + size - y1], [x0 - rx, rx + size - x1]],
                          constant_values=tf.constant(np.nan, dtype))
        phys = tf.ensure_shape(phys, [size, size])
        return {"phys": phys, **common}

    def kernels(self, size):
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
        if not self.vectorized:
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

    def words(self, batch, rows, size):
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
        start = tf.gather(self.tables["data_offset"], rows)
        return decode_words_tf(tf.strings.substr(contents, start, tf.fill(tf.shape(start), tf.constant(nbytes, tf.int64))),
                               spec)

    def finish(self, batch, size, kernels):
        """Decode (vectorized path), fill and normalize a whole batch at once."""
        import tensorflow as tf

        decode, standardize_kernel = kernels
        t = self.tables
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
            x = decode(self.words(batch, rows, size), ry, rx, fill, offset, scale)
        batch["x"] = tf.cast(stretch(x, self.cfg), tf.float32)[..., None]
        return batch

