"""The evaluation set: which test tiles are scored, and each rank's share of them, as numpy batches.

Contract: :func:`evaluation_batches` yields this rank's share of at most ``limit`` whole tiles of
a manifest; over all ranks every one of those tiles comes exactly once, and which tiles they are
depends only on the manifest and ``limit``, never on the number of ranks. Evaluation, the PCA fit,
the classical baselines and the β-VAE's rate–distortion all draw their tiles here, so the sample
and the sharding rule live in one place.
"""

from __future__ import annotations

import math

import numpy as np

from fitsae import distributed
from fitsae.data.manifest import Manifest, load_or_index
from fitsae.progress import Progress

__all__ = ["load_manifest", "spread_sample", "evaluation_batches", "to_physical", "input_bits"]


def load_manifest(paths: list[str], data_cfg, what: str) -> Manifest:
    """Index ``paths`` (or load one ``.jsonl`` manifest) on all ranks together.

    Under MPI the files are scanned by all ranks in parallel and every rank gets the whole
    manifest. Raises :class:`fitsae.data.manifest.ManifestError` (or ``OSError``) naming ``what``.
    """
    from dataclasses import replace

    return load_or_index(replace(data_cfg, paths=list(paths)), comm=distributed.comm(), what=what)


def spread_sample(manifest: Manifest, max_tiles: int | None) -> Manifest:
    """Image planes spread evenly over ``manifest`` holding about ``max_tiles`` tiles.

    A tile budget taken from the front of the manifest would sample the first few files only
    (one night, one field); evenly spaced planes sample the whole set. The choice depends only
    on the manifest, never on the number of ranks.
    """
    counts = [math.prod(row.tiles) for row in manifest]
    total = sum(counts)
    if max_tiles is None or total <= max_tiles:
        return manifest
    wanted = math.ceil(max_tiles * len(counts) / total)
    picks = np.unique(np.round(np.linspace(0, len(counts) - 1, max(1, wanted))).astype(int))
    return Manifest([manifest[int(i)] for i in picks])


def input_bits(manifest: Manifest, max_tiles: int | None) -> tuple[list[int], float]:
    """The sampled planes' BITPIX values and their mean |BITPIX|, weighted by tiles scored."""
    sample = spread_sample(manifest, max_tiles)
    weights = [math.prod(row.tiles) for row in sample]
    bits = sum(w * abs(row.bitpix) for w, row in zip(weights, sample)) / sum(weights)
    return sorted({row.bitpix for row in sample}), float(bits)


def evaluation_batches(manifest: Manifest, data_cfg, seed: int, batch_size: int, limit: int | None,
                       truth: bool = False, originals: bool = False, what: str | None = None):
    """Numpy batches of this rank's share of at most ``limit`` whole tiles.

    The pipeline deals tiles round-robin (rank r gets tiles r, r + size, ...), so taking the
    first ``limit / size`` tiles on every rank scores exactly the first ``limit`` tiles of the
    (sampled) manifest whatever the number of ranks.

    With ``truth``, when any plane has a ``TRUTH`` plane, each batch also carries ``truth``
    (B, S, S): the noiseless tile in physical units, pixel for pixel aligned with ``x``, NaN for
    planes without truth. Every batch carries ``background`` (B,): the tile's plane's robust
    median in physical units, the sky level whatever the normalization (``offset`` is 0 under
    ``none``, so it cannot say how far above the sky a pixel is). With ``originals``, ``pixels``
    (B, S, S): the tile's pixels exactly as stored (unfilled, never normalized), and what its
    plane stores — ``bitpix``, ``bscale``, ``bzero`` (B,). See :meth:`fitsae.data.pipeline.Pipeline.tile_pixels`.
    With ``what``, rank 0 logs progress lines with an ETA (:mod:`fitsae.progress`).
    """
    from fitsae.data.pipeline import Pipeline

    w = distributed.workers()
    sample = spread_sample(manifest, limit)
    pipe = Pipeline(sample, data_cfg, seed=seed, rank=w.rank, size=w.size)
    tiles = sum(math.prod(row.tiles) for row in sample)
    share = tiles // w.size + (1 if w.rank < tiles % w.size else 0)
    budget = None
    if limit is not None:
        budget = limit // w.size + (1 if w.rank < limit % w.size else 0)
        share = min(share, budget)
    progress = Progress(what + (f" (rank 0's share of {w.size})" if w.size > 1 else ""), share) if what else None
    taken = 0
    for batch in pipe.evaluation(batch_size).as_numpy_iterator():
        if budget is not None:
            if taken >= budget:
                break
            keep = min(len(batch["x"]), budget - taken)
            batch = {k: v[:keep] for k, v in batch.items()}
        taken += len(batch["x"])
        batch["background"] = np.array([pipe.manifest[int(pipe.tile_row[t])].median for t in batch["tile_id"]],
                                       np.float64)
        if truth and pipe.has_truth:
            batch["truth"] = pipe.tile_pixels(batch["tile_id"], "truth")
        if originals:
            rows = [pipe.manifest[int(pipe.tile_row[t])] for t in batch["tile_id"]]
            batch["pixels"] = pipe.tile_pixels(batch["tile_id"], "image")
            batch["bitpix"] = np.array([r.bitpix for r in rows], np.int64)
            batch["bscale"] = np.array([r.bscale for r in rows], np.float64)
            batch["bzero"] = np.array([r.bzero for r in rows], np.float64)
        yield batch
        if progress is not None:
            progress.advance(len(batch["x"]))
    if progress is not None:
        progress.finish()


def to_physical(x, batch: dict, data_cfg) -> np.ndarray:
    """Normalized values of a batch's tiles back in physical units (float64)."""
    from fitsae.data.normalize import denormalize

    return np.asarray(denormalize(x, batch["offset"], batch["scale"], data_cfg), dtype=np.float64)
