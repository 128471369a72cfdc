"""Frozen models: the weights and probability tables a container needs, named by digest.

A container names the model that wrote it by one SHA-256 (:attr:`FrozenModel.digest`, of the
weights and the tables). The frozen model lives in ``RUN/models/<digest[:16]>/`` — outside
``checkpoints/``, which training rotates (``train.keep_checkpoints``): a file compressed today
must still decode after the run has trained on and deleted the checkpoint it came from. Nothing
in fitsae deletes a frozen model. Layout of the folder:

- ``model.yaml``: digest, run directory and checkpoint step it came from, table source, version;
- ``params.yaml``: the run's config (how to build the model and normalize);
- ``weights.*``: a ``tf.train.Checkpoint`` of the model alone;
- ``tables.fits``: the latent probability tables (:mod:`fitsae.entropy`), a FITS table.

Decoders find a model by digest (:func:`find_frozen`) in, in order: ``--model PATH`` (a frozen
model folder or a folder of them), ``$FITSAE_MODELS``, and the recorded run's ``models/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

from fitsae import __version__
from fitsae.entropy import LatentTables, tables_from_hdu, tables_from_latents, tables_from_prior, tables_to_hdu
from fitsae.codec.errors import CodecError

__all__ = ["FrozenModel", "freeze", "tables_for", "load_frozen", "find_frozen", "weights_digest", "MODELS_DIR"]

log = logging.getLogger("fitsae")

MODELS_DIR = "models"
_FIT_TILES = 64  # training tiles whose latents a prior is fitted to, for a model trained without rate


def weights_digest(model) -> str:
    """SHA-256 of every weight of ``model`` in order."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(variable.numpy())).tobytes())
    return digest.hexdigest()


@dataclass
class FrozenModel:
    """A loaded frozen model: config, Keras model, tables and where it came from."""

    path: Path
    digest: str
    cfg: object
    model: object
    tables: LatentTables
    run_dir: str
    step: int


def _digest(model, tables: LatentTables) -> str:
    return hashlib.sha256((weights_digest(model) + tables.digest()).encode()).hexdigest()


def _fit_tables(run_dir: Path, cfg, model, step: float | None = None) -> LatentTables:
    """Tables fitted to the model's latents on its own training tiles (RUN/manifest.jsonl), on a
    grid of ``step`` (None: a fraction of each channel's spread, see :func:`tables_from_latents`)."""
    from fitsae.data.manifest import Manifest
    from fitsae.data.pipeline import Pipeline

    manifest_path = run_dir / "manifest.jsonl"
    if not manifest_path.is_file():
        raise CodecError(f"{run_dir}: the model was trained without a rate term, and fitting it a prior needs "
                         f"its training manifest ({manifest_path}), which is missing")
    import tensorflow as tf

    pipe = Pipeline(Manifest.load(manifest_path), cfg.data, seed=int(cfg.train.seed))
    latents, seen = [], 0
    for batch in pipe.evaluation(int(cfg.data.batch_size)).as_numpy_iterator():
        x = tf.convert_to_tensor(batch["x"], tf.float32)
        z = model.encode(x, tf.fill([tf.shape(x)[0]], tf.constant(model.latent_channels, tf.int32)))
        latents.append(np.asarray(z).reshape(-1, model.latent_channels))
        seen += len(batch["x"])
        if seen >= _FIT_TILES:
            break
    if not latents:
        raise CodecError(f"{manifest_path}: no training tiles could be read to fit a prior to")
    return tables_from_latents(np.concatenate(latents), step=step)


def tables_for(run_dir, cfg, model, step: int) -> LatentTables:
    """The tables :func:`freeze` stores for this model, computed without writing anything.

    Evaluation scores a checkpoint with exactly these (a read-only run can be scored).
    """
    if model.prior is not None and getattr(model, "prior_restored", True):
        return tables_from_prior(model.prior)
    if model.prior is not None:
        log.warning("%s step %d: its checkpoint lacks the learned prior (rate runs saved before fitsae "
                    "tracked it): fitting tables to its integer latents on its training data instead",
                    run_dir, step)
        return _fit_tables(Path(run_dir), cfg, model, step=1.0)
    log.warning("%s step %d was trained without a rate term: fitting a prior to its latents on its "
                "training data (rates are higher than a model trained for rate would reach)", run_dir, step)
    return _fit_tables(Path(run_dir), cfg, model)


def freeze(run_dir, checkpoint="latest") -> Path:
    """Freeze a run's checkpoint into ``RUN/models/<digest[:16]>/`` (reused if already there).

    A model trained with a rate term has its learned prior turned into tables; one trained
    without gets tables fitted to its latents on its training data, and a warning says so.
    """
    from fitsae.codec.load import load_checkpoint

    run_dir = Path(run_dir)
    cfg, model, step = load_checkpoint(run_dir, checkpoint)
    weights = weights_digest(model)
    source = "prior" if model.prior is not None and getattr(model, "prior_restored", True) else "fitted"
    for folder in _candidates(run_dir / MODELS_DIR):  # frozen before: fitting tables again is costly
        meta = _meta(folder)
        if meta.get("weights_digest") == weights and meta.get("tables") == source:
            return folder
    tables = tables_for(run_dir, cfg, model, step)
    digest = _digest(model, tables)
    target = run_dir / MODELS_DIR / digest[:16]
    if (target / "model.yaml").is_file():
        return target
    import tensorflow as tf

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".freezing-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a frozen model is shared like the run
    try:
        tf.train.Checkpoint(model=model).write(str(staging / "weights"))
        shutil.copyfile(run_dir / "params.yaml", staging / "params.yaml")
        fits.HDUList([fits.PrimaryHDU(), tables_to_hdu(tables)]).writeto(staging / "tables.fits", checksum=True)
        (staging / "model.yaml").write_text(yaml.safe_dump({
            "digest": digest, "weights_digest": weights, "run_dir": str(run_dir.resolve()),
            "checkpoint_step": int(step),
            "tables": tables.source, "fitsae_version": __version__,
        }, sort_keys=False))
        os.replace(staging, target)  # whole or not at all: a reader never sees half a model
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "model.yaml").is_file():
            raise
        # another process froze the same model first: theirs is identical
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_frozen(path) -> FrozenModel:
    """Load a frozen model folder and check that its contents still have its digest."""
    from fitsae import config as fconfig
    from fitsae.models import build_model
    from fitsae.train.config import ExperimentConfig, training_image_shape

    path = Path(path)
    try:
        meta = yaml.safe_load((path / "model.yaml").read_text())
        cfg = fconfig.load(ExperimentConfig, path / "params.yaml")
        with fits.open(path / "tables.fits", checksum=True) as hdul:
            tables = tables_from_hdu(hdul["TABLES"])
        model = build_model(cfg.model, training_image_shape(cfg))
        from fitsae.train.checkpoints import restore_weights

        restore_weights(model, path / "weights")  # a prior left out is harmless: decoding uses the tables
    except CodecError:
        raise
    except Exception as err:  # a damaged folder fails in many ways; name it
        raise CodecError(f"{path}: not a usable frozen fitsae model: {err}") from err
    digest = _digest(model, tables)
    if digest != meta.get("digest"):
        raise CodecError(f"{path}: its weights and tables have digest {digest[:16]}…, model.yaml says "
                         f"{str(meta.get('digest'))[:16]}… (the folder was altered)")
    return FrozenModel(path, digest, cfg, model, tables, str(meta.get("run_dir")), int(meta.get("checkpoint_step", -1)))


def _candidates(where) -> list[Path]:
    where = Path(where)
    if (where / "model.yaml").is_file():
        return [where]
    if where.is_dir():
        found = [p.parent for p in sorted(where.glob("*/model.yaml"))]
        return found + [p.parent for p in sorted(where.glob(f"{MODELS_DIR}/*/model.yaml"))]
    return []


def _meta(folder: Path) -> dict:
    try:
        meta = yaml.safe_load((folder / "model.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return meta if isinstance(meta, dict) else {}


def find_frozen(digest: str, search: list) -> Path | None:
    """The first frozen model folder with this digest among ``search`` (folders or model folders)."""
    for where in search:
        if where is None:
            continue
        for folder in _candidates(where):
            if _meta(folder).get("digest") == digest:
                return folder
    return None
