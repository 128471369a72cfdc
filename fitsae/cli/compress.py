"""``fitsae compress``: encode FITS images to autoencoder latents at a chosen η.

Example::

    fitsae compress --run-dir RUN --eta 4 image.fits --out image.fae.fits
    fitsae compress --run-dir RUN --eta 4 night1/ --out compressed/
    fitsae compress --run-dir RUN --eta 4 --quantize-level 4 image.fits --out image.fae.fits
    fitsae compress --run-dir RUN --eta 4 --lossless m13.fits --out m13.fae.fits

The container format is described in :mod:`fitsae.codec.container`; ``fitsae decompress``
inverts it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fitsae.data.config import DataConfig

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fitsae compress",
        description="Encode every image plane of the inputs with a trained run's model, tile by tile, "
        "keeping at most the first ETA latent channels, quantized and entropy-coded, into FITS containers "
        "(*.fae.fits: one table row of coded bytes per tile). The run's checkpoint is frozen into "
        "RUN/models/<digest> (weights and probability tables), which decoding needs. Decode with "
        "`fitsae decompress`. Under mpirun/srun the ranks share the input files.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="FITS files, directories or globs")
    p.add_argument("--run-dir", type=Path, required=True, help="run directory written by `fitsae train`")
    p.add_argument("--eta", type=int, required=True,
                   help="budget of latent channels, 1..C (larger: better, bigger); each tile keeps the "
                   "first ETA' <= ETA channels that reconstruct it best")
    p.add_argument("--fixed-eta", action="store_true",
                   help="the plain mask: keep exactly ETA channels in every tile (constant size, possibly worse)")
    p.add_argument("--out", type=Path, required=True,
                   help="output .fits file (one input file) or directory (<stem>.fae.fits per input)")
    p.add_argument("--checkpoint", default="latest", help="'latest' (default) or a step number")
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="per tile, STEPS Adam steps on the latents against the model's own rate-distortion "
                   "objective before coding (models trained for rate; ~0.2 s per step per 256x256 tile on two "
                   "cores; fewer flux errors, more bits: README). Default 0: the encoder's latents as they are")
    p.add_argument("--tile", type=int, default=256,
                   help="side of the square tiles each plane is cut into and coded alone (default 256; a "
                   "multiple of the model's stride; dense models use their own image size)")
    modes = p.add_argument_group("error-bounded and lossless modes (fpack's guarantees; the pixels themselves "
                                 "are coded, with the model as their probability model)")
    exclusive = modes.add_mutually_exclusive_group()
    exclusive.add_argument("--quantize-level", type=float, metavar="Q",
                           help="step = noise sigma / Q per tile, subtractively dithered: every pixel within half a "
                           "step, zero-mean error (fpack -q Q)")
    exclusive.add_argument("--max-error", type=float, metavar="E",
                           help="step = 2E (physical units): no pixel moves by more than E")
    exclusive.add_argument("--lossless", action="store_true", help="integer images only: bit-exact")
    modes.add_argument("--noise", type=float, help="with --quantize-level: noise sigma (physical units) instead "
                       "of each tile's estimate")
    modes.add_argument("--int-to-float", action="store_true",
                       help="with --quantize-level or --max-error: quantize integer images as float, at the "
                       "requested step with dither, and decode them as float32 (fpack -i2f); without it an integer "
                       "image keeps its type and its step is a whole odd number of counts")
    modes.add_argument("--dither-seed", type=int, metavar="N",
                       help="seed of the dither sequence, 1..10000 (default: from the clock, like fpack)")
    modes.add_argument("--residual-density", choices=("best", "laplace", "gaussian"), default="best",
                       help="density of the pixels around the model's mean; best (default): per tile, "
                       "whichever codes it in fewer bytes")
    return p


def _quantization(args):
    """The requested error-bounded mode, or None for the lossy mode."""
    from fitsae.codec.quantize import Quantization, default_seed

    if args.quantize_level is None and args.max_error is None and not args.lossless:
        if args.noise is not None or args.dither_seed is not None or args.int_to_float:
            raise ValueError("--noise, --dither-seed and --int-to-float need --quantize-level, --max-error or "
                             "--lossless")
        return None
    if args.noise is not None and args.quantize_level is None:
        raise ValueError("--noise goes with --quantize-level")
    if args.dither_seed is not None and not 1 <= args.dither_seed <= 10000:
        raise ValueError(f"--dither-seed must be in 1..10000, got {args.dither_seed}")
    mode = "lossless" if args.lossless else "max-error" if args.max_error is not None else "quantize"
    return Quantization(mode, level=args.quantize_level, max_error=args.max_error, noise=args.noise,
                        seed=args.dither_seed if args.dither_seed is not None else default_seed(),
                        int_to_float=args.int_to_float)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint != "latest" and not args.checkpoint.isdigit():
        print(f"fitsae compress: --checkpoint must be latest or a step number, got {args.checkpoint!r}",
              file=sys.stderr)
        return 2
    if args.tile < 1:
        print(f"fitsae compress: --tile must be positive, got {args.tile}", file=sys.stderr)
        return 2
    if args.refine < 0:
        print(f"fitsae compress: --refine must be >= 0 steps, got {args.refine}", file=sys.stderr)
        return 2
    # Typos are answered before TensorFlow loads (seconds).
    missing = DataConfig(paths=list(args.inputs)).missing_paths()
    if len(missing) == len(args.inputs):
        print(f"fitsae compress: nothing to compress, no such file, directory or glob match: "
              f"{', '.join(missing)}", file=sys.stderr)
        return 2
    if not (args.run_dir / "params.yaml").is_file():
        print(f"fitsae compress: {args.run_dir} is not a run directory (no params.yaml)", file=sys.stderr)
        return 2
    from fitsae.codec.errors import CodecError  # loads numpy and astropy: after the typo checks

    try:
        quantization = _quantization(args)
    except (ValueError, CodecError) as err:
        print(f"fitsae compress: {err}", file=sys.stderr)
        return 2
    from fitsae.outputs import unwritable_destination

    # Before the model is loaded (and frozen): a read-only destination is one line, at once.
    single = args.out.suffix.lower() in (".fits", ".fit", ".fts")
    problem = unwritable_destination(args.out.parent if single else args.out)
    if problem:
        print(f"fitsae compress: cannot write {problem}", file=sys.stderr)
        return 2
    from fitsae import distributed
    from fitsae.codec import compress_files

    try:
        distributed.init_workers()  # under mpirun/srun the ranks share the files
        results = compress_files(args.run_dir, args.inputs, args.eta, args.out, args.checkpoint,
                                 select="fixed" if args.fixed_eta else "best", tile=args.tile,
                                 quantization=quantization, family=args.residual_density, refine=args.refine)
    # An error may be one rank's alone (its files, its disk): the others would wait for it in a
    # collective for ever, so under MPI every error ends the job (in one process abort returns).
    except (CodecError, distributed.DistributedError) as err:
        print(f"fitsae compress: {err}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except OSError as err:  # a read-only or full output directory
        from fitsae.outputs import describe_os_error

        print(f"fitsae compress: cannot write: {describe_os_error(err)}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except Exception:
        import logging

        logging.getLogger("fitsae").exception("fitsae compress failed on this rank; ending every rank")
        distributed.abort(1)
        raise
    for r in results:
        if "rejected" in r:
            rej = r["rejected"]
            print(f"skipped {rej['path']} HDU {rej['hdu']}: {rej['reason']}", file=sys.stderr)
            continue
        kept = sorted(set(r["eta_kept"]))
        bound = ""
        if "mode_worst_over_delta" in r:
            bound = (f", largest error {r['mode_worst_over_delta']:.3f} step (median step {r['median_delta']:.4g}), "
                     f"mean error {r['mean_error']:.3g}")
        print(f"{r['source']} -> {r['container']}: {r['planes']} plane(s), {r['pixels']} pixels, "
              f"eta kept {','.join(map(str, kept))} of {r['eta']}, {r['bits_per_pixel']:.3f} bits/pixel "
              f"coded ({r['bits_per_pixel_file']:.3f} with headers), RMSE/noise {r['rmse_over_noise']:.3f}{bound} "
              f"(file {r['source_bytes']} -> {r['container_bytes']} bytes)")
        if r["grew"]:
            print(f"warning: {r['container']} is larger than its source {r['source']} "
                  f"({r['container_bytes']} > {r['source_bytes']} bytes): the source is already compressed "
                  "or small; keep the source", file=sys.stderr)
    return 0
