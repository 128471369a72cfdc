"""Run-directory checkpoints: what training writes and what evaluation loads.

``RUN/checkpoints/ckpt-<step>`` holds the model, both optimizers and the step, written by rank 0
through ``tf.train.CheckpointManager``. The data position is not stored separately: the pipeline
is deterministic in (seed, rank, step), so the step alone tells a resumed run which batch comes
next. :func:`load_model` is the one way other parts (evaluate, compress) get a trained model.
"""

from __future__ import annotations

import re
from pathlib import Path

import tensorflow as tf

from fitsae import config as fconfig
from fitsae.errors import FitsaeError

__all__ = [
    "CheckpointError",
    "checkpoint_dir",
    "list_checkpoints",
    "resolve_checkpoint",
    "training_checkpoint",
    "load_config",
    "load_model",
]

_CKPT = re.compile(r"^ckpt-(\d+)\.index$")


class CheckpointError(FitsaeError, RuntimeError):
    """A run directory or checkpoint that cannot be loaded; the message says which and why."""


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, prefix) of every complete checkpoint in ``RUN/checkpoints``, oldest first.

    Found by their index files rather than the manager's state file, so a run whose state file
    was lost (or written by an interrupted save) still resumes from the newest whole checkpoint.
    """
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _CKPT.match(path.name)
        if match and any(directory.glob(f"ckpt-{match.group(1)}.data-*")):
            found.append((int(match.group(1)), directory / f"ckpt-{match.group(1)}"))
    return sorted(found)


def resolve_checkpoint(run_dir, checkpoint="latest") -> tuple[int, Path]:
    """(step, prefix) of ``checkpoint`` ("latest" or a step number) in ``run_dir``."""
    available = list_checkpoints(run_dir)
    if not available:
        raise CheckpointError(f"{run_dir}: no checkpoints in {checkpoint_dir(run_dir)} (has this run trained?)")
    if checkpoint in ("latest", None):
        return available[-1]
    try:
        wanted = int(checkpoint)
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint must be 'latest' or a step number, got {checkpoint!r}") from None
    for step, prefix in available:
        if step == wanted:
            return step, prefix
    raise CheckpointError(
        f"{run_dir}: no checkpoint at step {wanted}; available steps: {', '.join(str(s) for s, _ in available)}"
    )


def training_checkpoint(model, optimizer_primary, optimizer_variance, step) -> tf.train.Checkpoint:
    """The object graph every training checkpoint stores (and :func:`load_model` reads part of)."""
    return tf.train.Checkpoint(
        model=model, optimizer_primary=optimizer_primary, optimizer_variance=optimizer_variance, step=step,
    )


def lacks_prior(model, prefix) -> bool:
    """Whether ``model`` has a rate prior that the checkpoint at ``prefix`` does not hold."""
    if getattr(model, "prior", None) is None:
        return False
    return not any(name.startswith("model/prior/") for name, _ in tf.train.list_variables(str(prefix)))


def restore_weights(model, prefix) -> bool:
    """Restore ``model``'s weights from the checkpoint at ``prefix``; False if it lacks the rate prior.

    Rate-trained checkpoints written before the prior was tracked (fitsae 0.1 kept its weights in
    a list TensorFlow did not save) hold every other weight. Those restore with the prior at its
    initial values and ``model.prior_restored`` False, so the codec fits tables to the model's
    integer latents instead of trusting an untrained density. Anything else missing is an error.
    """
    prior = getattr(model, "prior", None)
    restored = not lacks_prior(model, prefix)
    if not restored:
        model._delete_tracking("prior")  # noqa: SLF001 - TensorFlow's own way to leave a child out
    try:
        status = tf.train.Checkpoint(model=model).read(str(prefix))
        status.expect_partial()
        status.assert_existing_objects_matched()
    finally:
        if not restored:
            model._track_trackable(prior, "prior", overwrite=True)  # noqa: SLF001
    if prior is not None:
        model.prior_restored = restored
    return restored


def load_config(run_dir):
    """The :class:`~fitsae.train.config.ExperimentConfig` recorded in ``RUN/params.yaml``."""
    from fitsae.train.config import ExperimentConfig

    path = Path(run_dir) / "params.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a fitsae run directory (no params.yaml)")
    try:
        return fconfig.load(ExperimentConfig, path)
    except fconfig.ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err


def load_model(run_dir, checkpoint="latest"):
    """Rebuild the model of a run and restore its weights.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by ``fitsae train``.
    checkpoint : "latest" or int
        Which checkpoint (by step).

    Returns
    -------
    (ExperimentConfig, model, int)
        The run's config, the model with restored weights, and the checkpoint's step.

    Raises
    ------
    CheckpointError
        Missing run directory, params.yaml or checkpoint, or a checkpoint that is corrupt or
        does not match the model its params.yaml describes.
    """
    from fitsae.models import build_model
    from fitsae.train.config import training_image_shape

    cfg = load_config(run_dir)
    step, prefix = resolve_checkpoint(run_dir, checkpoint)
    model = build_model(cfg.model, training_image_shape(cfg))
    try:
        restore_weights(model, prefix)
        stored_step = int(tf.train.load_variable(str(prefix), "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except Exception as err:  # a damaged file fails in many ways (OpError, IndexError, ...): name it
        raise CheckpointError(f"{prefix}: cannot restore the model from this checkpoint: {err}") from err
    if stored_step != step:
        raise CheckpointError(f"{prefix}: file name says step {step} but it stores step {stored_step}")
    return cfg, model, step
