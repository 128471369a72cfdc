"""Restore a run's checkpoint for the codec, with the codec's error type.

Contract: :func:`load_checkpoint` returns a tunable dense or conv model (one with
``quantize_latent``) or raises :class:`~fitsae.codec.errors.CodecError` naming the run and the
checkpoint, so ``compress`` reports a missing or unusable run like any other bad input.
"""

from __future__ import annotations

from fitsae.codec.errors import CodecError

__all__ = ["load_checkpoint"]


def load_checkpoint(run_dir, checkpoint="latest"):
    """(config, model, step) of a tunable dense/conv run; :class:`CodecError` when it cannot be used."""
    from fitsae.train.checkpoints import CheckpointError, load_model

    try:
        cfg, model, step = load_model(run_dir, checkpoint)
    except CheckpointError as err:
        raise CodecError(str(err)) from err
    except (OSError, ValueError, IndexError) as err:
        raise CodecError(f"{run_dir}: checkpoint {checkpoint!r} cannot restore the model: {err}") from err
    if not hasattr(model, "quantize_latent"):
        raise CodecError(f"{run_dir}: the codec needs a tunable dense or conv model, not {model.model_config.kind!r}")
    return cfg, model, step
