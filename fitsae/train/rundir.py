"""The run directory of a training session: resume checks, ``params.yaml``, the ``run.yaml`` log.

Contract: rank 0 alone calls these. A run directory holding checkpoints resumes only the same
experiment — the model section and the seed may not change (:func:`prepare_run_dir` refuses
naming the keys); other changes are allowed and logged. Each session appends its world size,
steps, seeds and outcome to ``RUN/run.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from fitsae import config as fconfig
from fitsae.train import checkpoints
from fitsae.train.config import ExperimentConfig

__all__ = ["prepare_run_dir", "record_session"]

log = logging.getLogger("fitsae")

# A resumed run must be the same experiment: these keys may not change between sessions.
_FROZEN_SECTIONS = ("model",)
_FROZEN_KEYS = (("train", "seed"),)


def _resume_problems(saved: ExperimentConfig, new: ExperimentConfig) -> tuple[list[str], list[str]]:
    """(changes that make resuming impossible, harmless changes) between two configs."""
    old_d, new_d = fconfig.to_dict(saved), fconfig.to_dict(new)
    frozen, changed = [], []
    for section in old_d:
        for key in old_d[section]:
            a, b = old_d[section][key], new_d[section][key]
            if a != b:
                text = f"{section}.{key}: {a!r} -> {b!r}"
                is_frozen = section in _FROZEN_SECTIONS or (section, key) in _FROZEN_KEYS
                (frozen if is_frozen else changed).append(text)
    return frozen, changed


def prepare_run_dir(cfg: ExperimentConfig, run_dir: Path):
    """Rank 0: find a checkpoint to resume from, check compatibility, write params.yaml."""
    latest = None
    available = checkpoints.list_checkpoints(run_dir)
    if available:
        latest = available[-1]
        saved = checkpoints.load_config(run_dir)
        frozen, changed = _resume_problems(saved, cfg)
        if frozen:
            raise fconfig.ConfigError(
                f"{run_dir} holds checkpoints of a different experiment ({'; '.join(frozen)}); "
                "use a new --run-dir, or the run's own params.yaml to resume it"
            )
        for text in changed:
            log.warning("resuming with a changed setting: %s", text)
    run_dir.mkdir(parents=True, exist_ok=True)
    fconfig.dump(cfg, run_dir / "params.yaml")
    return latest


def record_session(run_dir: Path, entry: dict) -> None:
    """Append/refresh this session in ``RUN/run.yaml`` (world size, steps, seeds, outcome)."""
    path = run_dir / "run.yaml"
    sessions = []
    if path.is_file():
        sessions = (yaml.safe_load(path.read_text()) or {}).get("sessions", [])
    if sessions and sessions[-1].get("started") == entry["started"]:
        sessions[-1] = entry
    else:
        sessions.append(entry)
    path.write_text(yaml.safe_dump({"sessions": sessions}, sort_keys=False))

