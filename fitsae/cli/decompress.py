"""``fitsae decompress``: decode ``fitsae compress`` containers to μ and σ FITS images.

Example::

    fitsae decompress image.fae.fits --out image.decoded.fits
    fitsae decompress compressed/*.fae.fits --out decoded/

The output has one ``MU`` (decoded mean) and one ``SIGMA`` (predicted 1σ) image HDU per plane,
in the physical units of the original.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fitsae.data.config import DataConfig

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fitsae decompress",
        description="Decode fitsae latent containers (*.fae.fits) with the model that wrote them into "
        "FITS files holding MU and SIGMA image HDUs (physical units). The model's weight digest must "
        "match the one recorded in the container.",
    )
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.add_argument("--out", type=Path, required=True,
                   help="output .fits file (one container) or directory (<stem>.decoded.fits each)")
    p.add_argument("--run-dir", type=Path, help="run directory of the model (default: RUNDIR in the container)")
    p.add_argument("--checkpoint", help="step number (default: CKPTSTEP in the container)")
    return p


def _target(container: Path, out: Path, single: bool) -> Path:
    if single:
        return out
    name = container.name
    stem = name[: -len(".fae.fits")] if name.endswith(".fae.fits") else container.stem
    return out / f"{stem}.decoded.fits"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.isdigit():
        print(f"fitsae decompress: --checkpoint must be a step number, got {args.checkpoint!r}", file=sys.stderr)
        return 2
    missing = DataConfig(paths=list(args.containers)).missing_paths()
    if len(missing) == len(args.containers):  # answered before TensorFlow loads (seconds)
        print(f"fitsae decompress: nothing to decompress, no such file, directory or glob match: "
              f"{', '.join(missing)}", file=sys.stderr)
        return 2
    containers = [Path(c) for c in args.containers]
    single = len(containers) == 1 and args.out.suffix.lower() in (".fits", ".fit", ".fts")
    from fitsae.codec import CodecError, decompress_file

    try:
        for container in containers:
            r = decompress_file(container, _target(container, args.out, single), args.run_dir,
                                int(args.checkpoint) if args.checkpoint else None)
            print(f"{r['container']} -> {r['out']}: {r['planes']} plane(s) (MU, SIGMA), "
                  f"{r['bits_per_pixel']:.3f} bits/pixel stored")
    except CodecError as err:
        print(f"fitsae decompress: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only or full output directory
        from fitsae.outputs import describe_os_error

        print(f"fitsae decompress: cannot write: {describe_os_error(err)}", file=sys.stderr)
        return 2
    return 0
