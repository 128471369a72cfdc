"""The generic training loop: any model of the ``fitsae.models`` protocol, 1 to N ranks.

Contract: one step = each rank draws a batch and (in the graph) its own η, calls the model's
``compute_losses``, and two optimizers apply rank-averaged gradients: optimizer 1 on
``loss_primary`` over ``primary_variables``, optimizer 2 on ``loss_variance`` over
``variance_variables``. Per-example (B,) tensors the model returns are averaged exactly over
ranks and logged under their own names (the MSE also per η bucket). Rank 0 alone writes
checkpoints, TensorBoard events and progress; after every step one allreduce (max) of a status
flag makes all ranks go on, stop for a signal (checkpoint, exit 75) or stop on a non-finite
loss (no checkpoint, exit 3) together.

Why: the loop knows nothing else about the model, so every model kind trains the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from fitsae import config as fconfig
from fitsae import distributed
from fitsae.data.skips import batches
from fitsae.models import build_model
from fitsae.progress import eta_seconds, format_duration
from fitsae.train import checkpoints
from fitsae.train.config import ExperimentConfig, OptimizerConfig, training_image_shape
from fitsae.train.export import export_model
from fitsae.train.rundir import prepare_run_dir, record_session
from fitsae.train.signals import EXIT_DIVERGED, EXIT_OK, EXIT_REQUEUE, StopSignals
from fitsae.train.summaries import Summaries
from fitsae.train.window import MetricsWindow

__all__ = ["TrainResult", "WarmupDecay", "build_optimizers", "train"]

log = logging.getLogger("fitsae")

_GO, _STOP, _DIVERGED = 0.0, 1.0, 2.0


@dataclass
class TrainResult:
    """How a training session ended."""

    exit_code: int
    step: int
    reason: str
    metrics: dict = field(default_factory=dict)


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak``, then constant, cosine or exponential decay."""

    def __init__(self, peak: float, warmup_steps: int, schedule: str, decay_steps: int, final_fraction: float):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.schedule = schedule
        self.decay_steps = int(decay_steps)
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.peak, tf.float32)
        if self.warmup_steps:
            rate = rate * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        t = tf.maximum(step - self.warmup_steps, 0.0) / self.decay_steps
        if self.schedule == "cosine":
            cosine = 0.5 * (1.0 + tf.cos(math.pi * tf.minimum(t, 1.0)))
            rate = rate * (self.final_fraction + (1.0 - self.final_fraction) * cosine)
        elif self.schedule == "exponential":
            rate = rate * tf.pow(self.final_fraction, t)
        return rate

    def get_config(self):
        return {
            "peak": self.peak, "warmup_steps": self.warmup_steps, "schedule": self.schedule,
            "decay_steps": self.decay_steps, "final_fraction": self.final_fraction,
        }


def build_optimizers(ocfg: OptimizerConfig, total_steps: int, world_size: int = 1):
    """(optimizer 1, optimizer 2) as configured, peak rates scaled for ``world_size`` if asked."""
    factor = {"none": 1.0, "linear": float(world_size), "sqrt": math.sqrt(world_size)}[ocfg.scale_with_world_size]

    def make(peak: float, name: str):
        rate = WarmupDecay(peak * factor, ocfg.warmup_steps, ocfg.schedule, ocfg.decay_steps or total_steps,
                           ocfg.final_fraction)
        kwargs = {"learning_rate": rate, "name": name}
        if ocfg.clipnorm:
            kwargs["global_clipnorm"] = ocfg.clipnorm
        if ocfg.name == "adam":
            return keras.optimizers.Adam(**kwargs)
        if ocfg.name == "adamw":
            return keras.optimizers.AdamW(weight_decay=ocfg.weight_decay, **kwargs)
        return keras.optimizers.SGD(momentum=ocfg.momentum, **kwargs)

    variance_rate = ocfg.variance_learning_rate or ocfg.learning_rate
    return make(ocfg.learning_rate, "optimizer_primary"), make(variance_rate, "optimizer_variance")


def _current_rate(optimizer) -> float:
    return float(optimizer.learning_rate)



def _weights_digest(variables) -> str:
    """SHA-256 of the weights' bytes; equal on every rank exactly when the ranks are in sync."""
    digest = hashlib.sha256()
    for v in variables:
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()


def _all_finite(variables) -> bool:
    floats = [v for v in variables if tf.as_dtype(v.dtype).is_floating]
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in floats])) if floats else True


def _fits_data(cfg: ExperimentConfig, run_dir: Path, workers):
    """The FITS pipeline for this rank; the manifest it trains on is kept as RUN/manifest.jsonl."""
    from fitsae.data.manifest import load_or_index
    from fitsae.data.pipeline import Pipeline

    manifest = load_or_index(cfg.data, distributed.comm())
    if workers.is_root:
        manifest.save(run_dir / "manifest.jsonl")
    return Pipeline(manifest, cfg.data, seed=cfg.train.seed, rank=workers.rank, size=workers.size)


def _image_etas(cfg: ExperimentConfig, channels: int) -> list[int]:
    if cfg.train.image_etas:
        return [min(max(1, e), channels) for e in cfg.train.image_etas]
    return sorted({1, max(1, channels // 4), max(1, channels // 2), channels})


def train(cfg: ExperimentConfig, run_dir, data=None) -> TrainResult:
    """Train (or resume) the run in ``run_dir`` on every rank of the job.

    Parameters
    ----------
    cfg : ExperimentConfig
    run_dir : str or Path
        Created if needed; if it holds checkpoints, training resumes from the newest.
    data : object, optional
        Anything with ``.training(start_step) -> tf.data.Dataset`` of batch dicts (``"x"``
        (B, H, W, 1)), e.g. :class:`fitsae.train.memory.ArrayData`. Default: the FITS pipeline
        over ``cfg.data.paths``.

    Returns
    -------
    TrainResult
        ``exit_code`` 0 (done), 75 (stopped by SIGTERM/SIGUSR1 after checkpointing: requeue) or
        3 (non-finite loss: stopped without checkpointing the bad state).
    """
    workers = distributed.init_workers()
    comm = distributed.comm()
    root = workers.is_root
    run_dir = Path(run_dir)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    payload = {"error": None, "latest": None}
    if root:
        try:
            latest = prepare_run_dir(cfg, run_dir)
            payload["latest"] = str(latest[1]) if latest else None
        except (fconfig.ConfigError, checkpoints.CheckpointError, OSError) as err:
            payload["error"] = str(err)
    payload = comm.bcast(payload, root=0)
    if payload["error"]:
        raise fconfig.ConfigError(payload["error"])

    keras.utils.set_random_seed(cfg.train.seed)
    if data is None:
        data = _fits_data(cfg, run_dir, workers)
    try:
        image_shape = training_image_shape(cfg)
        model = build_model(cfg.model, image_shape)
    except ValueError as err:
        raise fconfig.ConfigError(f"model: {err}") from err
    opt1, opt2 = build_optimizers(cfg.optimizer, cfg.train.steps, workers.size)
    primary, variance = model.primary_variables, model.variance_variables
    # Built now, not lazily at the first update as in Horovod's examples (which broadcast after
    # the first step for that reason): the broadcast below then precedes the first step, and
    # that step is already identical on every rank.
    opt1.build(primary)
    opt2.build(variance)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    ckpt = checkpoints.training_checkpoint(model, opt1, opt2, step_var)
    manager = None
    if root:
        manager = tf.train.CheckpointManager(
            ckpt, str(checkpoints.checkpoint_dir(run_dir)), max_to_keep=cfg.train.keep_checkpoints,
            checkpoint_name="ckpt",
        )
    if payload["latest"] and checkpoints.lacks_prior(model, payload["latest"]):
        raise fconfig.ConfigError(
            f"{payload['latest']}: saved by a fitsae that did not save the rate prior, so training cannot "
            f"resume from it; start a new run directory (this run still compresses and evaluates, with "
            f"tables fitted to its latents)")
    start = 0
    if root and payload["latest"]:
        ckpt.read(payload["latest"]).assert_existing_objects_matched()
        start = int(step_var.numpy())
        log.info("resuming %s from step %d", run_dir, start)
    start = int(comm.bcast(start, root=0))
    distributed.broadcast(model, opt1, opt2)
    step_var.assign(start)

    summaries = Summaries(run_dir, enabled=root)
    total = cfg.train.steps
    session = {
        "started": started, "host": socket.gethostname(), "world_size": workers.size,
        "backend": workers.backend, "start_step": start, "seed": cfg.train.seed,
        "data_seed": "pipeline(seed, rank)", "eta_seed": "stateless(seed, rank, step)",
    }
    if root:
        record_session(run_dir, session)
        summaries.text(start, "config", "    " + yaml.safe_dump(fconfig.to_dict(cfg), sort_keys=False).replace("\n", "\n    "))

    dataset = data.training(start_step=start)
    spec = dataset.element_spec["x"]
    if image_shape[0] is not None and tuple(spec.shape[1:]) != tuple(image_shape):
        raise fconfig.ConfigError(
            f"the data give images of shape {tuple(spec.shape[1:])}, the model was built for {image_shape}"
        )
    seed, rank = cfg.train.seed, workers.rank
    softening = cfg.data.asinh_softening if cfg.data.normalization == "asinh" else None
    trained = list({id(v): v for v in primary + variance}.values())

    @tf.function
    def train_step(x, noise, step):
        with tf.GradientTape(persistent=True) as tape:
            out = model.compute_losses(x, step, seed, rank, training=True, noise=noise, softening=softening)
        grads1 = distributed.gradient(tape, out["loss_primary"], primary)
        grads2 = distributed.gradient(tape, out["loss_variance"], variance) if variance else []
        opt1.apply_gradients(zip(grads1, primary))
        if variance:
            opt2.apply_gradients(zip(grads2, variance))
        # A finite loss can still come with an overflowing update; checked here, in the graph,
        # so a non-finite state is caught at the step that produced it, before any save.
        finite = tf.math.is_finite(out["loss_primary"]) & tf.math.is_finite(out["loss_variance"])
        for v in trained:
            finite &= tf.reduce_all(tf.math.is_finite(v))
        return out, finite

    window = MetricsWindow(model.latent_channels, cfg.train.eta_buckets)
    all_variables = model.variables + opt1.variables + opt2.variables
    image_batch = None
    keys: list[str] | None = None
    eta_trace: list = []
    last_saved = start if payload["latest"] else -1
    metrics: dict = {}

    def save(step: int) -> None:
        nonlocal last_saved
        if root and step != last_saved:
            if not _all_finite(all_variables):
                raise FloatingPointError(f"refusing to checkpoint non-finite weights at step {step}")
            step_var.assign(step)
            manager.save(checkpoint_number=step)
            last_saved = step

    def log_window(step: int, t_last: float) -> tuple[dict, float]:
        now = time.perf_counter()
        means = window.reduce(keys)
        images = means.pop("images")
        means["lr/primary"] = _current_rate(opt1)
        if variance:
            means["lr/variance"] = _current_rate(opt2)
        means["perf/images_per_sec"] = images / max(now - t_last, 1e-9)
        summaries.scalars(step, means)
        if root and cfg.train.progress:
            rate = means["perf/images_per_sec"]
            text = "  ".join(f"{k} {means[k]:.4g}" for k in ("mse", "nll", "rate/bpp") if k in means)
            # Timed from the end of the session's first step, so graph tracing does not inflate it.
            left = eta_seconds(step - pace[0], total - pace[0], now - pace[1]) if pace else None
            eta = f"  ETA {format_duration(left)}" if left is not None and step < total else ""
            log.info("step %d/%d  %s  %.0f img/s%s", step, total, text, rate, eta)
        window.reset()
        if cfg.train.trace_eta:
            gathered = comm.gather(eta_trace, root=0)
            if root:
                with open(run_dir / "eta_trace.jsonl", "a") as fh:
                    for r, rows in enumerate(gathered):
                        for s, etas in rows:
                            fh.write(json.dumps({"step": s, "rank": r, "eta": etas}) + "\n")
            eta_trace.clear()
        return means, now

    reason, code = "finished", EXIT_OK
    step = start
    t_last = time.perf_counter()
    pace: tuple[int, float] | None = None
    with StopSignals() as stop:
        iterator = batches(dataset)  # the data layer's own error if its files went bad
        while step < total:
            batch = next(iterator)
            x = batch["x"]
            if image_batch is None:
                image_batch = x[: cfg.train.image_count]
            out, finite = train_step(x, batch["noise"], tf.constant(step, tf.int64))
            finite = bool(finite)
            if finite:
                window.add(out)
                if keys is None:
                    keys = sorted(k for k, v in out.items() if not k.startswith("loss_") and len(v.shape) == 1)
                if cfg.train.trace_eta and "eta" in out:
                    eta_trace.append((step, [int(e) for e in out["eta"].numpy()]))
            step += 1
            if pace is None:
                pace = (step, time.perf_counter())
            flag = _DIVERGED if not finite else (_STOP if stop.requested else _GO)
            flag = distributed.allreduce_max(flag)
            if flag >= _DIVERGED:
                reason, code = f"non-finite loss or weights at step {step}", EXIT_DIVERGED
                log.error("stopping: %s; no checkpoint written for it (last good: %s). Lower the "
                          "learning rate or check the data, then rerun to resume.", reason,
                          last_saved if last_saved >= 0 else "none")
                break
            if keys is not None and (step % cfg.train.log_every == 0 or step == total or flag >= _STOP):
                metrics, t_last = log_window(step, t_last)
            if cfg.train.image_every and step % cfg.train.image_every == 0:
                summaries.images(step, model, image_batch, _image_etas(cfg, model.latent_channels))
            if step % cfg.train.checkpoint_every == 0:
                save(step)
            if flag >= _STOP:
                save(step)
                reason, code = f"stopped by {stop.received or 'a signal on another rank'} at step {step}", EXIT_REQUEUE
                log.warning("%s; checkpoint saved, exit %d: please requeue (rerun resumes)", reason, code)
                break

        # Still inside StopSignals: a Ctrl-C while the final checkpoint or export is written must
        # not raise KeyboardInterrupt in the middle of it (a second one exits at once).
        if code == EXIT_OK:
            save(step)
            if image_batch is not None:
                summaries.images(step, model, image_batch, _image_etas(cfg, model.latent_channels))
            if root and cfg.train.export:
                export_model(model, run_dir / "export", yaml.safe_dump(fconfig.to_dict(cfg), sort_keys=False))
        summaries.flush()
        summaries.close()
        # Cheap end-of-session check that gradient averaging really kept the ranks identical (the
        # failure mode of Horovod's Keras-3 wrappers is silent divergence, not an error).
        digests = comm.gather(_weights_digest(model.variables), root=0)
        if root:
            if len(set(digests)) > 1:
                log.error("model weights differ between ranks at step %d: data-parallel training is broken", step)
            session.update({"end_step": step, "exit_code": code, "reason": reason, "weight_digests": digests})
            record_session(run_dir, session)
        comm.Barrier()  # nobody exits (and makes mpirun kill the job) before rank 0 has saved
        return TrainResult(code, step, reason, {k: float(v) for k, v in metrics.items()})

