"""The ``data:`` section of an experiment config (:class:`DataConfig`).

Every key says where the images are and how they are cut, normalized and batched; the
dataclass is the single place its defaults and allowed values live (strict: unknown keys are
errors). Kept free of TensorFlow imports so that reading and checking a config is instant.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
from dataclasses import dataclass, field
from typing import Literal, Optional

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """Where the images are and how they are cut, normalized and batched.

    Attributes
    ----------
    paths : list of str
        FITS files, directories (searched recursively for ``*.fits``, ``*.fit``, ``*.fts``,
        ``*.fz`` and their ``.gz``), glob patterns, or a single ``.jsonl`` manifest written by
        ``fitsae index`` (fastest: headers are not read again).
    tile : int
        Side of the square tiles images are cut into. Evaluation batches are whole tiles.
    stride : int or None
        Distance between tile origins; None means ``tile`` (no overlap).
    edge : {"shift", "pad", "drop"}
        What to do where the grid does not fit the image: ``shift`` moves the last tile of a row
        or column back so it ends at the image edge (covers everything, no invented pixels);
        ``pad`` fills the part outside the image by the ``fill`` rule (also lets images smaller
        than the tile through); ``drop`` leaves the incomplete border out. With ``shift`` and
        ``drop`` an image smaller than the tile is rejected.
    crop : int or None
        Training batches are random ``crop × crop`` windows of the tiles (None: whole tiles).
    batch_size : int
        Examples per batch per rank.
    shuffle_buffer : int
        0 (default): each epoch is one exact seeded permutation of all tiles (8 bytes per tile).
        N > 0: a bounded-memory permutation instead: blocks of N consecutive tiles are visited in
        shuffled order, each block shuffled inside, which also keeps reads of one file close
        together. Either way every tile appears exactly once per epoch.
    normalization : {"robust", "asinh", "none"}
        ``robust``: ``(x - median) / noise`` with the per-image median and noise σ from the
        manifest, so background ≈ 0 and noise ≈ 1. ``asinh``: the same followed by
        ``a·asinh(x/a)`` with ``a = asinh_softening`` (linear within a few σ, logarithmic for
        bright sources). ``none``: physical units, no arithmetic at all. Chosen by the kind of
        data: sky images, where the noise is the natural unit, take ``robust`` (the default) or
        ``asinh``; noiseless bounded images (digits, MNIST), whose only noise is quantization,
        take ``none``: noise is no unit for them, and a stretch makes the loss weigh pixels
        otherwise than the physical error it is scored by (``train/digits-dense.yaml``).
    asinh_softening : float
        ``a`` above, in noise units.
    noise : float or None
        Noise σ of every image plane in physical units, when you know it (e.g. from the detector's
        read noise and gain): used instead of the header's ``NOISE`` and the estimate from the
        pixels (``fitsae index --noise`` sets it). None: header ``NOISE``, else the estimate
        (:mod:`fitsae.data.normalize`).
    fill : {"offset", "zero"}
        Value given to NaN/Inf/BLANK pixels and ``pad`` margins: the image's median (the
        manifest's ``median``; normalized 0, i.e. background) or physical 0. The value is spelled
        ``offset`` because configs already use it. How many pixels were filled is in the
        manifest (``n_masked``).
    parallel_reads : int or None
        Concurrent tile reads/decodes per rank (None: tf.data AUTOTUNE).
    whole_file_max_ratio, whole_file_min_bytes : float, int
        Read a file whole with ``tf.io.read_file`` when it is at most ``whole_file_max_ratio``
        times larger than the pixels one tile needs, or at most ``whole_file_min_bytes``;
        otherwise read just the tile's rows (cube planes, mosaic tiles) with a ranged read.
    """

    paths: list[str] = field(default_factory=list)
    tile: int = 256
    stride: Optional[int] = None
    edge: Literal["shift", "pad", "drop"] = "shift"
    crop: Optional[int] = None
    batch_size: int = 16
    shuffle_buffer: int = 0
    normalization: Literal["robust", "asinh", "none"] = "robust"
    asinh_softening: float = 3.0
    noise: Optional[float] = None
    fill: Literal["offset", "zero"] = "offset"
    parallel_reads: Optional[int] = None
    whole_file_max_ratio: float = 4.0
    whole_file_min_bytes: int = 1 << 16

    def __post_init__(self):
        if self.tile < 1:
            raise ValueError(f"data.tile={self.tile} must be positive")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"data.stride={self.stride} must be positive")
        if self.crop is not None and not 1 <= self.crop <= self.tile:
            raise ValueError(f"data.crop={self.crop} must be between 1 and data.tile={self.tile}")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size} must be positive")
        if self.shuffle_buffer < 0:
            raise ValueError(f"data.shuffle_buffer={self.shuffle_buffer} must be >= 0")
        if self.noise is not None and not (self.noise > 0 and math.isfinite(self.noise)):
            raise ValueError(f"data.noise={self.noise} must be a positive number "
                             "(or null: the header's NOISE, else estimated)")
        if self.asinh_softening <= 0:
            raise ValueError(f"data.asinh_softening={self.asinh_softening} must be positive")
        if self.parallel_reads is not None and self.parallel_reads < 1:
            raise ValueError(f"data.parallel_reads={self.parallel_reads} must be positive")

    @property
    def tile_stride(self) -> int:
        return self.stride or self.tile

    def absolute(self) -> "DataConfig":
        """This section with every path made absolute (``~`` expanded, relative to the current
        directory), so a run's ``params.yaml`` resumes from any working directory."""
        return dataclasses.replace(self, paths=[os.path.abspath(os.path.expanduser(p)) for p in self.paths])

    def missing_paths(self) -> list[str]:
        """Entries of ``paths`` that name nothing: no such file or directory, or a glob matching
        nothing. A cheap check (no FITS file is opened) for before a job is queued."""
        missing = []
        for path in self.paths:
            path = os.path.expanduser(path)
            if not (os.path.exists(path) or (glob.has_magic(path) and glob.glob(path, recursive=True))):
                missing.append(path)
        return missing
