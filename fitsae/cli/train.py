"""``fitsae train``: train or resume a tunable autoencoder, alone or under mpirun/srun.

Example::

    mpirun -np 2 fitsae train --config train/fullyconv-256.yaml --run-dir runs/fc --set train.steps=500

A thin layer over :func:`fitsae.train.loop.train`: the config is resolved (defaults ← YAML ←
``--set``) and checked before TensorFlow loads. The exit codes (:mod:`fitsae.train.signals`)
tell a wrapper script whether to requeue; the ``--help`` epilog lists them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from fitsae import config as fconfig
from fitsae.train.signals import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_REQUEUE, EXIT_USAGE

EXIT_FAILED = 1  # an unexpected error: the traceback says where

EPILOG = f"""\
configs: section defaults <- --config FILE.yaml <- --set section.key=value (strict: unknown keys
are errors). The resolved config is saved as RUN/params.yaml, with data.paths made absolute
(relative paths are relative to the directory you run this in). Named configs live in train/.

resume: if RUN already has checkpoints, training continues from the newest (the model section and
train.seed must match; --config may then be omitted and RUN/params.yaml is used, from any
working directory).

exit codes: 0 finished; {EXIT_FAILED} an unexpected error (the traceback says where; under MPI every
rank is aborted); 2 bad config or data; {EXIT_DIVERGED} non-finite loss (nothing saved for it;
lower the learning rate, rerun resumes from the last good checkpoint); {EXIT_REQUEUE} stopped by
SIGTERM/SIGUSR1/SIGINT (Ctrl-C) after checkpointing -- please requeue, the same command resumes
exactly; {EXIT_INTERRUPTED} a second Ctrl-C, or Ctrl-C before the first step (nothing new saved).

TensorBoard: tensorboard --logdir RUN/tb
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fitsae train",
        description="Train (or resume) a tunable-rate autoencoder on FITS images. Run it alone, "
        "or as `mpirun -np N fitsae train ...` / `srun fitsae train ...` for data-parallel training "
        "with Horovod (data.batch_size is per rank).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="experiment YAML (e.g. train/smoke.yaml)")
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory (created; resumed if it has checkpoints)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set train.steps=100")
    parser.add_argument("--check", action="store_true",
                        help="only check the config (keys, values, tile vs model stride) and that "
                        "data.paths exist, then exit: 0 if training could start, 2 otherwise; no "
                        "TensorFlow, no writes (slurm/submit.sh runs it before queueing)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from fitsae.train.config import ExperimentConfig

    config_path = args.config
    if config_path is None:
        saved = args.run_dir / "params.yaml"
        if not saved.is_file():
            print(f"fitsae train: give --config FILE (no {saved} to resume from)", file=sys.stderr)
            return EXIT_USAGE
        config_path = saved
    try:
        cfg = fconfig.load(ExperimentConfig, config_path, args.overrides)
    except fconfig.ConfigError as err:
        print(f"fitsae train: {err}", file=sys.stderr)
        return EXIT_USAGE
    cfg = dataclasses.replace(cfg, data=cfg.data.absolute())
    if args.check:
        return _check(cfg, config_path)
    try:
        return _train(cfg, args.run_dir)
    except KeyboardInterrupt:
        # Ctrl-C before the training loop took over SIGINT (imports, indexing, model building).
        print("fitsae train: interrupted (Ctrl-C) before training started; checkpoints already in "
              f"{args.run_dir} are kept, rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _check(cfg, config_path: Path) -> int:
    if not cfg.data.paths:
        print(f"fitsae train: {config_path}: data.paths is empty", file=sys.stderr)
        return EXIT_USAGE
    missing = cfg.data.missing_paths()
    if missing:
        print(f"fitsae train: {config_path}: data.paths: no such file, directory or glob match: "
              f"{', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    print(f"fitsae train: {config_path}: config OK ({cfg.model.kind} model, {cfg.train.steps} steps, "
          f"{len(cfg.data.paths)} data path(s))", file=sys.stderr)
    return 0


def _train(cfg, run_dir: Path) -> int:
    from fitsae import distributed
    from fitsae.errors import FitsaeError
    from fitsae.train.loop import train

    try:
        distributed.init_workers()
        result = train(cfg, run_dir)
    except FitsaeError as err:  # config, MPI, manifest, pipeline, FITS input, checkpoint
        logging.getLogger("fitsae").error("%s", err)
        print(f"fitsae train: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        # A bug or an I/O failure on this rank alone (rank 0's export, say): the other ranks
        # would wait for it in their next collective for ever. Say what happened, end the job.
        logging.getLogger("fitsae").exception("fitsae train failed on this rank; aborting every rank")
        distributed.abort(EXIT_FAILED)
        raise
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
