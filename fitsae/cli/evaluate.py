"""``fitsae evaluate``: score a run's checkpoints on held-out images against PCA and fpack.

Examples::

    fitsae evaluate --run-dir RUN --data test/*.fits          # RUN/eval/report.json + plots
    mpirun -np 4 fitsae evaluate --run-dir RUN --data test/ --checkpoint all
    fitsae evaluate --run-dir RUN --data test/ --watch &      # each new checkpoint, into RUN/tb/eval
    fitsae evaluate --plot-only RUN/eval                      # redraw: no model, data or TensorFlow

A thin layer over :func:`fitsae.evaluate.runner.run`: options are checked here, before
TensorFlow loads, and become an :class:`fitsae.evaluate.options.EvalOptions`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fitsae evaluate",
        description="Score a run's checkpoints on held-out FITS images: per-η MSE, RMSE/σ_noise, "
        "PSNR, NLL and σ calibration, against PCA (fitted on training data) at equal kept values "
        "and fpack (RICE_1/HCOMPRESS_1, dithered, 256x256 tiles) and JPEG-XL (on RICE's integers) "
        "at measured bits per pixel; against the noiseless truth too where simulated data carry "
        "one (TRUTH planes). η is a budget, as in `fitsae "
        "compress`: each tile keeps its best η' <= η channels; the plain mask (exactly η channels) is "
        "scored beside it (ae_fixed_mask). Writes report.json, "
        "results.csv and PNG plots; prints the AE-vs-PCA table.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run-dir", type=Path, help="run directory written by `fitsae train`")
    p.add_argument("--data", nargs="+", metavar="PATH",
                   help="held-out FITS files, directories, globs, or one .jsonl manifest")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/eval)")
    p.add_argument("--etas", help="η values: '1,2,8', '1-16' or 'all' (default: every η for a "
                   "dense model with ≤64 units, else a log-spaced spread including C)")
    p.add_argument("--checkpoint", default="latest",
                   help="'latest' (default), a step number, or 'all' (each in OUT/steps/step-N, "
                   "the newest also in OUT)")
    p.add_argument("--watch", action="store_true",
                   help="keep polling RUN/checkpoints and score every new checkpoint; stops after "
                   "scoring the run's final step (train.steps) or after --watch-timeout seconds "
                   "without a new checkpoint")
    p.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                   help="--watch: seconds between looks at RUN/checkpoints (default 30)")
    p.add_argument("--watch-timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="--watch: give up after this long without a new checkpoint (default 3600)")
    p.add_argument("--batch-size", type=int, help="tiles per batch per rank (default: data.batch_size)")
    p.add_argument("--max-tiles", type=int, help="score at most this many test tiles (all ranks together)")
    p.add_argument("--pca-data", nargs="+", metavar="PATH",
                   help="training images for the PCA fit and a β-VAE's quantization fit (default: "
                   "RUN/manifest.jsonl, the exact training set, else the run's data.paths); never the test images")
    p.add_argument("--pca-tiles", type=int, default=2000,
                   help="training tiles sampled for the PCA fit (default 2000; a β-VAE's quantization fit takes at most 64)")
    p.add_argument("--fpack-tiles", type=int, default=64,
                   help="test tiles compressed with each fpack and JPEG-XL setting (default 64; 0 skips them)")
    p.add_argument("--logbetas", help="β-VAE runs: log10 β values, e.g. --logbetas=0,1,2,3 (default: a "
                   "spread over the training range)")
    p.add_argument("--bounded-levels", metavar="Q,Q,...",
                   help="also score the error-bounded modes (compress --quantize-level) at these q, e.g. "
                   "0.5,1,2,4,8,16, beside RICE_1 and JPEG-XL at the same q (report.json 'bounded')")
    p.add_argument("--compare", type=Path, metavar="REPORT",
                   help="β-VAE runs: a tunable AE's report.json whose AE, PCA and fpack rows are drawn "
                   "on the same rate-distortion plot")
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="score what `fitsae compress --refine STEPS` writes: each budget's latents refined per "
                   "tile (models trained for rate; default 0)")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write RUN/tb/eval scalars")
    p.add_argument("--no-plots", action="store_true", help="write report.json/CSV only")
    p.add_argument("--plot-only", type=Path, metavar="DIR",
                   help="redraw every figure in DIR from DIR/report.json and print its tables; "
                   "needs nothing else")
    return p


def _plot_only(directory: Path) -> int:
    from fitsae.evaluate.plots import draw_all
    from fitsae.evaluate.report import format_bounded_table, format_fpack_table, format_table, load_report

    try:
        report = load_report(directory)
    except (FileNotFoundError, ValueError) as err:
        print(f"fitsae evaluate: {err}", file=sys.stderr)
        return 2
    target = directory if directory.is_dir() else directory.parent
    try:
        written = draw_all(report, target)
    except OSError as err:
        from fitsae.outputs import describe_os_error

        print(f"fitsae evaluate: cannot write the figures: {describe_os_error(err)}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(format_table(report))
    print(format_fpack_table(report))
    if report.get("bounded"):
        print(format_bounded_table(report))
    return 0


def _parse_logbetas(text: str | None) -> list[float] | None:
    from fitsae.evaluate.options import EvaluationError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise EvaluationError(f"--logbetas {text!r}: expected comma-separated numbers, e.g. -2,-1,0,1")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot_only:
        return _plot_only(args.plot_only)
    if args.run_dir is None or not args.data:
        parser.print_usage(sys.stderr)
        print("fitsae evaluate: --run-dir and --data are required (or --plot-only DIR)", file=sys.stderr)
        return 2
    if args.checkpoint not in ("latest", "all") and not args.checkpoint.isdigit():
        print(f"fitsae evaluate: --checkpoint must be latest, all or a step number, got {args.checkpoint!r}",
              file=sys.stderr)
        return 2
    for name in ("batch_size", "max_tiles"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"fitsae evaluate: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.pca_tiles < 1 or args.fpack_tiles < 0 or args.refine < 0:
        print("fitsae evaluate: --pca-tiles must be >= 1, --fpack-tiles and --refine >= 0", file=sys.stderr)
        return 2

    from fitsae import distributed
    from fitsae.errors import FitsaeError
    from fitsae.evaluate.options import EvalOptions, parse_etas
    from fitsae.evaluate.runner import run

    try:
        etas = parse_etas(args.etas)
        logbetas = _parse_logbetas(args.logbetas)
        options = EvalOptions(
            run_dir=args.run_dir, data=list(args.data), out=args.out, etas=etas,
            checkpoint=args.checkpoint, watch=args.watch, poll_seconds=args.poll,
            watch_timeout=args.watch_timeout, batch_size=args.batch_size, max_tiles=args.max_tiles,
            pca_data=args.pca_data, pca_tiles=args.pca_tiles, fpack_tiles=args.fpack_tiles,
            fpack=args.fpack_tiles > 0, tensorboard=not args.no_tensorboard, plots=not args.no_plots,
            logbetas=logbetas, compare=args.compare, refine=args.refine,
            bounded_levels=tuple(float(v) for v in args.bounded_levels.split(",")) if args.bounded_levels else (),
        )
        run(options)
    # Under mpirun an error may be this rank's alone (rank 0 writes the report): the others would
    # wait for it in their next collective for ever, so every error ends the whole job. In a
    # single process distributed.abort returns and the exit code is as before.
    except FitsaeError as err:
        print(f"fitsae evaluate: {err}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except OSError as err:  # e.g. the disk filled up while writing the report
        from fitsae.outputs import describe_os_error

        print(f"fitsae evaluate: cannot write: {describe_os_error(err)}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except Exception:
        import logging

        logging.getLogger("fitsae").exception("fitsae evaluate failed on this rank; ending every rank")
        distributed.abort(1)
        raise
    return 0
