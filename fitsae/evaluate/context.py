"""What one evaluation fixes before any checkpoint is scored: data, geometry, η, PCA, baselines.

Contract: an :class:`EvalContext` is built once per ``fitsae evaluate`` (the first checkpoint's
model gives the geometry) and shared by every checkpoint it scores, so the test manifest, the PCA
fit (on *training* tiles) and the classical baselines are computed once and identical on all ranks.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from fitsae import distributed
from fitsae.data.evalset import evaluation_batches, load_manifest
from fitsae.evaluate.comparisons import classical_baselines, fit_pca
from fitsae.evaluate.geometry import Geometry
from fitsae.evaluate.options import EvalOptions, EvaluationError, resolve_etas

__all__ = ["EvalContext", "manifest_for", "training_paths"]

log = logging.getLogger("fitsae")


def manifest_for(paths: list[str], data_cfg, save_to: Path, what: str):
    """Index ``paths`` (or load a ``.jsonl`` manifest) on all ranks; rank 0 records it in ``save_to``,
    the exact list of what was evaluated."""
    from fitsae.data.manifest import ManifestError

    try:
        manifest = load_manifest(paths, data_cfg, what)
    except (ManifestError, OSError) as err:
        raise EvaluationError(str(err)) from err
    if distributed.is_root():
        manifest.save(save_to)
    return manifest


def training_paths(options: EvalOptions, cfg) -> list[str]:
    """Where the baselines' fits find *training* tiles: ``--pca-data``, else the exact manifest
    training used (RUN/manifest.jsonl), else the run's data.paths."""
    if options.pca_data:
        return list(options.pca_data)
    recorded = Path(options.run_dir) / "manifest.jsonl"
    if recorded.is_file():
        return [str(recorded)]
    if not cfg.data.paths:
        raise EvaluationError(
            f"{options.run_dir}: no RUN/manifest.jsonl and no data.paths in params.yaml to fit "
            "the baselines on; give training images with --pca-data"
        )
    return list(cfg.data.paths)


class EvalContext:
    """Everything that does not depend on the checkpoint: data, PCA fit, fpack, TensorBoard."""

    def __init__(self, options: EvalOptions, cfg, model):
        self.options = options
        self.cfg = cfg
        out = options.out_dir
        self.data_cfg = cfg.data
        self.seed = int(cfg.train.seed)
        self.batch_size = int(options.batch_size or cfg.data.batch_size)
        self.test_manifest = manifest_for(options.data, cfg.data, out / "test.manifest.jsonl", "test data")
        train_paths = self.pca_paths = training_paths(options, cfg)
        self.train_manifest = manifest_for(
            train_paths, cfg.data, out / "train.manifest.jsonl",
            "PCA training sample (use --pca-data to point elsewhere)",
        )
        self._warn_overlap()
        self.tile_shape = self._tile_shape()
        self.geometry = Geometry(model, self.tile_shape)
        self.etas = resolve_etas(options.etas, self.geometry.fixed, self.geometry.channels)
        log.info("fitting PCA (%s-dim %s) on up to %d training tiles",
                 self.geometry.pca_dim, "images" if self.geometry.fixed else "patches", options.pca_tiles)
        self.pca = fit_pca(self.train_manifest, self.data_cfg, self.geometry, self.seed, self.batch_size,
                           options.pca_tiles)
        self.baselines = None  # computed after the first pass, which provides the PSNR peak
        self.writer = None
        if options.tensorboard and distributed.is_root():
            import tensorflow as tf

            self.writer = tf.summary.create_file_writer(str(Path(options.run_dir) / "tb" / "eval"))

    def classical(self, peak: float) -> dict:
        """fpack and JPEG-XL on the test tiles, computed the first time (they need the PSNR peak of
        the first scoring pass) and kept for every later checkpoint."""
        opts = self.options
        if self.baselines is None:
            self.baselines = (
                classical_baselines(self.test_manifest, self.data_cfg, self.geometry, self.seed, self.batch_size,
                                    opts.fpack_tiles, peak)
                if opts.fpack and opts.fpack_tiles > 0 else {"fpack": [], "jpegxl": []}
            )
        return self.baselines

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _tile_shape(self) -> tuple[int, int]:
        shape = None
        for batch in evaluation_batches(self.test_manifest, self.data_cfg, self.seed, 1, 1):
            shape = tuple(int(v) for v in batch["x"].shape[1:3])
        # Every rank joins the allgather: one with no tiles (more ranks than tiles) learns the
        # shape from the others.
        shapes = [s for s in distributed.comm().allgather(shape) if s]
        if not shapes:
            raise EvaluationError("test data: the pipeline produced no tiles")
        return shapes[0]

    def _warn_overlap(self) -> None:
        def files(manifest):
            return {str(Path(row.path).resolve()) for row in manifest}

        shared = files(self.test_manifest) & files(self.train_manifest)
        if shared:
            log.warning("%d test file(s) are also in the training data (e.g. %s): scores are optimistic",
                        len(shared), sorted(shared)[0])

    def pca_summary(self) -> dict:
        fit = self.pca
        total = float(fit.eigenvalues.sum())
        return {
            "fit_on": "training data sample",
            "paths": self.pca_paths,
            "max_tiles": self.options.pca_tiles,
            "n_vectors": fit.n,
            "dim": fit.dim,
            "patch_shape": list(self.geometry.patch),
            "components_per": "image" if self.geometry.fixed else "patch",
            "eigenvalues": [float(v) for v in fit.eigenvalues],
            "explained_variance_ratio": [float(v) / total if total > 0 else math.nan for v in np.cumsum(fit.eigenvalues)],
            "units": "normalized (noise ≈ 1)",
        }

