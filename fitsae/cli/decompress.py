"""``fitsae decompress``: decode ``fitsae compress`` containers back to FITS images.

Example::

    fitsae decompress image.fae.fits --out image.decoded.fits
    fitsae decompress compressed/ --out decoded/ --sigma
    fitsae decompress big.fae.fits --section 0:512,1024:2048 --out cut.fits

The output mirrors the source: the same image HDUs with their headers (WCS and all), NaN/BLANK
pixels where they were, integer BITPIX kept; ``--sigma`` adds the predicted 1σ map per HDU.
Containers of the error-bounded modes decode to the quantized pixels themselves (each within
half a step of the source; bit-exact for ``--lossless``), in the source's units and type.
Version-1 containers (float32 latents) decode to ``MU`` and ``SIGMA`` HDUs as before.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from fitsae.data.config import DataConfig

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fitsae decompress",
        description="Decode fitsae containers (*.fae.fits) with the frozen model they name (found by its "
        "digest) into FITS files shaped like their sources. Under mpirun/srun the ranks share the containers.",
    )
    p.add_argument("containers", nargs="+", metavar="CONTAINER", help="containers, directories or globs")
    p.add_argument("--out", type=Path, required=True,
                   help="output .fits file (one container) or directory (<stem>.decoded.fits each)")
    p.add_argument("--model", type=Path,
                   help="frozen model folder, or a folder of them such as RUN/models (default: $FITSAE_MODELS, "
                   "then the models/ of the run recorded in the container)")
    p.add_argument("--section", help="decode only rows y0:y1 and columns x0:x1 of every plane (0-based, end "
                   "exclusive): 'y0:y1,x0:x1'; only the tiles it touches are decoded")
    p.add_argument("--sigma", action="store_true", help="add a SIGMA image HDU: the decoded pixels' 1σ error, physical units (the "
                   "model's in the lossy mode; the quantization's in the error-bounded modes)")
    p.add_argument("--run-dir", type=Path, help="version-1 containers: run directory (default: RUNDIR in it)")
    p.add_argument("--checkpoint", help="version-1 containers: step number (default: CKPTSTEP in it)")
    return p


def _expand(items: list[str]) -> list[Path]:
    found = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += sorted(path.rglob("*.fae.fits"))
        elif any(ch in item for ch in "*?["):
            found += sorted(Path(p) for p in glob.glob(item, recursive=True))
        else:
            found.append(path)
    return found


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
    containers = _expand(args.containers)
    missing = [str(c) for c in containers if not c.is_file()]
    if not containers or missing:
        print(f"fitsae decompress: nothing to decompress, no such file, directory or glob match: "
              f"{', '.join(missing) or ', '.join(args.containers)}", file=sys.stderr)
        return 2
    single = len(containers) == 1 and args.out.suffix.lower() in (".fits", ".fit", ".fts")
    from fitsae.outputs import unwritable_destination

    problem = unwritable_destination(args.out.parent if single else args.out)  # before any model is loaded
    if problem:
        print(f"fitsae decompress: cannot write {problem}", file=sys.stderr)
        return 2
    from fitsae import distributed
    from fitsae.codec import CodecError, decompress_file, parse_section

    try:
        section = parse_section(args.section)
        targets = [_target(c, args.out, single) for c in containers]
        if len(set(targets)) != len(targets):
            raise CodecError("two containers share a name and would be decoded to the same file; decode them "
                             "into separate --out directories")
        distributed.init_workers()  # under mpirun/srun the ranks share the containers
        for container, target in distributed.my_share(zip(containers, targets, strict=True)):
            r = decompress_file(container, target, model=args.model, section=section, sigma=args.sigma,
                                run_dir=args.run_dir, checkpoint=int(args.checkpoint) if args.checkpoint else None)
            # Each rank reports its files as they are done: a line per file, whole, in any order.
            print(f"{r['container']} -> {r['out']}: {r['planes']} plane(s), {r['bits_per_pixel']:.3f} bits/pixel "
                  "coded", flush=True)
    # As in compress: under MPI an error on one rank ends the job rather than leave the others waiting.
    except (CodecError, distributed.DistributedError) as err:
        print(f"fitsae decompress: {err}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except OSError as err:  # a read-only or full output directory
        from fitsae.outputs import describe_os_error

        print(f"fitsae decompress: cannot write: {describe_os_error(err)}", file=sys.stderr)
        distributed.abort(2)
        return 2
    except Exception:
        import logging

        logging.getLogger("fitsae").exception("fitsae decompress failed on this rank; ending every rank")
        distributed.abort(1)
        raise
    return 0
