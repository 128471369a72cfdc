"""``fitsae evaluate``'s drivers: score the requested checkpoints once (:func:`run`) or follow a run.

One evaluation of one checkpoint is a single pass over the test tiles
(:mod:`fitsae.evaluate.scoring`), with the data, PCA fit and classical baselines set up once per
invocation (:mod:`fitsae.evaluate.context`) and the report assembled from the reduced sums
(:mod:`fitsae.evaluate.assembly`). Under ``mpirun`` every rank scores its own share of tiles, so
the numbers do not depend on the number of ranks.

Watch mode (``--watch``) polls ``RUN/checkpoints`` and scores every checkpoint not yet scored,
writing ``eval/*`` scalars to ``RUN/tb/eval`` (rank 0) at the checkpoint's step. It stops after
scoring a checkpoint at or beyond ``train.steps`` (training always writes one at its last step),
or when no new checkpoint appeared for ``--watch-timeout`` seconds.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from fitsae import distributed
from fitsae.evaluate.assembly import build_report
from fitsae.data.evalset import evaluation_batches
from fitsae.evaluate.context import EvalContext, manifest_for, training_paths
from fitsae.evaluate.options import EvalOptions, EvaluationError
from fitsae.evaluate.plots import draw_all
from fitsae.evaluate.report import format_bounded_table, format_fpack_table, format_table, write_report
from fitsae.evaluate.scoring import score_checkpoint

__all__ = ["run"]

log = logging.getLogger("fitsae")


def _load(run_dir, checkpoint):
    from fitsae.train.checkpoints import CheckpointError, load_model, resolve_checkpoint

    try:
        cfg, model, step = load_model(run_dir, checkpoint)
    except CheckpointError as err:
        raise EvaluationError(str(err)) from err
    except (OSError, ValueError, IndexError) as err:
        # TensorFlow's checkpoint reader reports some truncated files this way (IndexError:
        # "Read less bytes than requested") rather than as an OpError.
        _, prefix = resolve_checkpoint(run_dir, checkpoint)
        raise EvaluationError(f"{prefix}: cannot restore the model from this checkpoint "
                              f"(corrupt or truncated file?): {err}") from err
    return cfg, model, step


def _checkpoint_steps(run_dir) -> list[int]:
    from fitsae.train.checkpoints import list_checkpoints

    return [step for step, _ in list_checkpoints(run_dir)]



def _evaluate_one(ctx: EvalContext, model, step: int, out_dir: Path) -> dict:
    from fitsae.codec.artifact import tables_for
    from fitsae.codec.encoder import TileCodec
    from fitsae.codec.refine import refiner_for

    opts = ctx.options
    log.info("evaluating checkpoint step %d at η = %s", step, ctx.etas)
    try:
        refiner = refiner_for(model, ctx.data_cfg, opts.refine)
    except ValueError as err:
        raise EvaluationError(f"{opts.run_dir}: {err}") from err
    codec = TileCodec(model, tables_for(opts.run_dir, ctx.cfg, model, step), refiner)
    book, data_range, tiles, examples = score_checkpoint(
        codec, ctx.test_manifest, ctx.data_cfg, ctx.geometry, ctx.etas, ctx.pca, ctx.seed,
        ctx.batch_size, opts.max_tiles, opts.example_size,
    )
    ctx.classical(data_range.peak)
    report = build_report(ctx, step, book, data_range, tiles, examples)
    results = report["results"]
    if opts.bounded_levels and distributed.is_root():
        from fitsae.codec.artifact import FrozenModel
        from fitsae.evaluate.bounded import bounded_rows

        frozen = FrozenModel(None, f"step-{step}", ctx.cfg, model, codec.tables, str(opts.run_dir), int(step))
        report["bounded"] = bounded_rows(frozen, list(ctx.test_manifest), levels=opts.bounded_levels)
    if distributed.is_root():
        write_report(report, out_dir)
        if opts.plots:
            draw_all(report, out_dir)
        if ctx.writer is not None:
            _write_scalars(ctx.writer, step, results)
    distributed.comm().Barrier()
    return report




def _write_scalars(writer, step: int, results: list[dict]) -> None:
    import tensorflow as tf

    with writer.as_default(step=int(step)):
        for row in results:
            tag = f"eta_{row['eta']:03d}"
            for method, keys in (("ae", ("rmse_over_noise", "rmse_over_noise_truth", "psnr", "nll", "sigma_z_std",
                                         "coverage_1sigma", "mean_eta_kept")),
                                 ("ae_fixed_mask", ("rmse_over_noise",)),
                                 ("pca", ("rmse_over_noise", "rmse_over_noise_truth", "psnr"))):
                for key in keys:
                    value = row.get(method, {}).get(key)
                    if value is not None and math.isfinite(value):
                        tf.summary.scalar(f"eval/{method}_{key}/{tag}", float(value))
    writer.flush()


def _announce(report: dict, out_dir: Path) -> None:
    distributed.root_print(format_table(report))
    distributed.root_print(format_fpack_table(report))
    if report.get("bounded"):
        distributed.root_print(format_bounded_table(report))
    distributed.root_print(f"report: {out_dir / 'report.json'}")


def run(options: EvalOptions) -> list[dict]:
    """Evaluate the requested checkpoint(s); returns the reports (rank 0 also writes them).

    Raises
    ------
    EvaluationError
        Missing/corrupt checkpoint, no usable test or training images, bad η.
    """
    distributed.init_workers()
    run_dir = Path(options.run_dir)
    out = options.out_dir
    if not options.watch and not run_dir.is_dir():  # before anything is created under it
        raise EvaluationError(f"run directory {run_dir} does not exist")
    options = _usable_outputs(options)
    if options.watch:
        # A watcher may be started before training has created the run directory.
        return _watch(options)
    if options.checkpoint == "all":
        steps = _checkpoint_steps(run_dir)
        if not steps:
            raise EvaluationError(f"{run_dir}: no checkpoints in {run_dir / 'checkpoints'} (has this run trained?)")
    else:
        steps = [options.checkpoint]
    reports = []
    scorer = _Scorer(options)
    for i, wanted in enumerate(steps):
        cfg, model, step = _load(run_dir, wanted)
        last = i == len(steps) - 1
        target = out if last else out / "steps" / f"step-{step}"
        reports.append(scorer.score(cfg, model, step, target,
                                    copy_to=out / "steps" / f"step-{step}" if len(steps) > 1 and last else None))
    scorer.close()
    if scorer.ctx is not None:
        _announce(reports[-1], out)
    return reports


class _Scorer:
    """Scores checkpoints of one run as its model's ``rate_control`` says; ``run`` and ``--watch`` share it.

    ``"eta"`` (tunable AEs): per-η metrics against PCA and fpack, with the data, PCA fit and fpack
    baselines set up once (:class:`_Context`). ``"logbeta"`` (β-VAE): rate–distortion over log β.
    The model declares which, so no caller can score a model with the other's code.
    """

    def __init__(self, options: EvalOptions):
        self.options = options
        self.ctx = None

    def score(self, cfg, model, step: int, out_dir: Path, copy_to: Path | None = None) -> dict:
        """Evaluate one checkpoint into ``out_dir`` (rank 0 also writes the report to ``copy_to``)."""
        if model.rate_control == "logbeta":
            report = _evaluate_bvae(self.options, cfg, model, step, out_dir)
            if copy_to is not None and distributed.is_root():
                _write_bvae(self.options, report, copy_to)
            return report
        if self.ctx is None:
            self.ctx = EvalContext(self.options, cfg, model)
        report = _evaluate_one(self.ctx, model, step, out_dir)
        if copy_to is not None and distributed.is_root():
            write_report(report, copy_to)
        return report

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.close()


def _usable_outputs(options: EvalOptions) -> EvalOptions:
    """Refuse an output directory that cannot be written before any work; without a writable
    ``RUN/tb/eval``, score anyway and skip the TensorBoard scalars (a read-only run, someone
    else's, is still scorable with ``--out``). Rank 0 looks, every rank gets its verdict."""
    from dataclasses import replace

    from fitsae.outputs import unwritable

    problems = None
    if distributed.is_root():
        tb = Path(options.run_dir) / "tb" / "eval"
        problems = (unwritable(options.out_dir),
                    unwritable(tb) if options.tensorboard and Path(options.run_dir).is_dir() else None)
    out_problem, tb_problem = distributed.comm().bcast(problems, root=0)
    if out_problem:
        hint = "" if options.out else "; give --out DIR somewhere writable"
        raise EvaluationError(f"cannot write the report: {out_problem}{hint}")
    if tb_problem:
        log.warning("cannot write TensorBoard scalars (%s): scoring without them "
                    "(--no-tensorboard silences this)", tb_problem)
        return replace(options, tensorboard=False)
    return options


def _evaluate_bvae(options: EvalOptions, cfg, model, step: int, out_dir: Path) -> dict:
    """A β-VAE has no η: score rate (the KL bound, and real bytes of its latents coded with a
    quantization fitted on training tiles) against distortion over a grid of log β instead.

    The rows (``fitsae.evaluate.bvae_rd``) go to ``bvae_rd.json`` and ``bvae_rd.png``; with
    ``options.compare`` (a tunable AE's report.json) the AE, PCA and fpack curves share the plot.
    """
    from fitsae.evaluate import bvae_rd

    if options.compare is not None and not Path(options.compare).is_file():
        raise EvaluationError(f"--compare {options.compare}: no such report.json")
    from fitsae.evaluate.bvae_coding import FIT_TILES

    seed, batch_size = int(cfg.train.seed), int(options.batch_size or cfg.data.batch_size)
    manifest = manifest_for(options.data, cfg.data, out_dir / "test.manifest.jsonl", "test data")
    train = manifest_for(training_paths(options, cfg), cfg.data, out_dir / "train.manifest.jsonl",
                         "training tiles for the β-VAE's quantization (use --pca-data to point elsewhere)")
    batches = evaluation_batches(manifest, cfg.data, seed, batch_size, options.max_tiles)
    fit = evaluation_batches(train, cfg.data, seed, batch_size, min(FIT_TILES, options.pca_tiles),
                             what="β-VAE quantization fit on training tiles")
    report = bvae_rd.bvae_report(model, step, batches, options.logbetas, data_cfg=cfg.data, seed=seed,
                                 fit_batches=fit)
    if distributed.is_root():
        _write_bvae(options, report, out_dir)
    distributed.root_print(bvae_rd.format_bvae_table(report))
    distributed.root_print(f"report: {out_dir / bvae_rd.REPORT_NAME}")
    return report


def _write_bvae(options: EvalOptions, report: dict, out_dir: Path) -> None:
    import json

    from fitsae.evaluate import bvae_rd

    compare = json.loads(Path(options.compare).read_text()) if options.compare else None
    bvae_rd.write_bvae_report(report, out_dir, compare=compare)


def _watch(options: EvalOptions) -> list[dict]:
    """Poll for checkpoints until the run's final step is scored or nothing new came for a while."""
    run_dir, out = Path(options.run_dir), options.out_dir
    world = distributed.comm()
    done: set[int] = set()
    reports = []
    scorer = _Scorer(options)
    last_new = time.monotonic()
    log.info("watching %s for checkpoints (poll %gs, give up after %gs without a new one)",
             run_dir / "checkpoints", options.poll_seconds, options.watch_timeout)
    while True:
        # Rank 0 decides what to evaluate so every rank loads the same checkpoints in step.
        pending = world.bcast(
            [s for s in _checkpoint_steps(run_dir) if s not in done] if distributed.is_root() else None, root=0
        )
        for step in pending:
            try:
                cfg, model, step = _load(run_dir, step)
            except EvaluationError as err:
                # The CheckpointManager may be deleting an old checkpoint as we look: skip it.
                log.warning("skipping checkpoint %s: %s", step, err)
                done.add(step)
                continue
            report = scorer.score(cfg, model, step, out, copy_to=out / "steps" / f"step-{step}")
            if scorer.ctx is not None:
                _announce(report, out)
            reports.append(report)
            done.add(step)
            last_new = time.monotonic()
            if step >= int(cfg.train.steps):
                log.info("scored the final checkpoint (step %d = train.steps); watch ends", step)
                scorer.close()
                return reports
        idle = time.monotonic() - last_new
        stop = world.bcast(idle >= options.watch_timeout, root=0)
        if stop:
            log.info("no new checkpoint for %.0f s; watch ends", idle)
            scorer.close()
            if not reports:
                raise EvaluationError(f"{run_dir}: no checkpoint appeared within --watch-timeout {options.watch_timeout:g}s")
            return reports
        time.sleep(options.poll_seconds)
