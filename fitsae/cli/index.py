"""``fitsae index``: scan FITS files once, write the manifest and the list of rejected inputs.

Example::

    fitsae index data/ "night2/*.fits" --out data/train.jsonl [--noise 4.2] [--strict]

A thin layer over :func:`fitsae.data.manifest.index_paths`. Exit 0 when at least one image plane
is usable (with ``--strict``: and nothing was rejected), 2 otherwise; every rejection is printed
and written to ``MANIFEST_STEM.rejected.jsonl`` with its path, HDU and reason.
"""

from __future__ import annotations

import argparse
import json
import sys

from pathlib import Path

from fitsae import config as fconfig
from fitsae.data.config import DataConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fitsae index",
        description="Read every FITS header once (files, directories searched recursively, or globs), "
        "measure each image plane's median and noise (--noise, else the header's NOISE, else estimated), "
        "and write one JSON line per usable plane to MANIFEST; rejected inputs (path, HDU, reason) are "
        "printed and written to MANIFEST_STEM.rejected.jsonl beside it. Under mpirun the files are split "
        "over the ranks. "
        "Exit 0 when at least one image is usable (with --strict: and nothing was rejected), 2 otherwise.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--out", required=True, metavar="MANIFEST", help="manifest to write (.jsonl)")
    parser.add_argument("--config", help="experiment YAML whose data: section sets tile/stride/edge/noise")
    parser.add_argument("--tile", type=int, help="tile side (overrides the config; default 256)")
    parser.add_argument("--stride", type=int, help="tile stride (default: the tile side)")
    parser.add_argument("--edge", choices=("shift", "pad", "drop"), help="edge policy (default shift)")
    parser.add_argument("--noise", type=float, metavar="SIGMA",
                        help="noise sigma of every plane in physical units, used instead of the header's NOISE "
                        "and the estimate from the pixels (overrides the config's data.noise)")
    parser.add_argument("--strict", action="store_true", help="exit 2 if any input was rejected")
    return parser


def _data_config(args) -> DataConfig:
    section = fconfig.read_yaml(args.config).get("data", {}) if args.config else {}
    options = (("tile", args.tile), ("stride", args.stride), ("edge", args.edge), ("noise", args.noise))
    overrides = {k: v for k, v in options if v is not None}
    return fconfig.from_dict(DataConfig, {**section, **overrides}, "data")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = _data_config(args)
    except fconfig.ConfigError as err:
        print(f"fitsae index: {err}", file=sys.stderr)
        return 2
    # Answered before numpy and astropy are imported: a typo should not cost their start-up.
    missing = DataConfig(paths=list(args.paths)).missing_paths()
    if len(missing) == len(args.paths):
        print(f"fitsae index: no such file, directory or glob match: {', '.join(missing)}", file=sys.stderr)
        return 2
    from fitsae import distributed
    from fitsae.data.manifest import index_paths, rejected_path
    from fitsae.outputs import describe_os_error, unwritable

    workers = distributed.init_workers(configure_tensorflow=False)
    comm = distributed.comm()
    # Rank 0 writes; every rank learns its verdict, so none starts a scan the others abandon.
    problem = comm.bcast(unwritable(Path(args.out).parent) if workers.is_root else None, root=0)
    if problem:
        if workers.is_root:
            print(f"fitsae index: cannot write the manifest: {problem}", file=sys.stderr)
        return 2
    manifest, rejected = index_paths(args.paths, cfg, comm if workers.size > 1 else None)
    if workers.is_root:
        bad = rejected_path(args.out)
        try:
            manifest.save(args.out)
            bad.write_text("".join(json.dumps(r) + "\n" for r in rejected))
        except OSError as err:
            print(f"fitsae index: cannot write the manifest: {describe_os_error(err)}", file=sys.stderr)
            return 2
        print(f"{args.out}: {manifest.summary()}")
        if rejected:
            print(f"{len(rejected)} rejected (also in {bad}):")
            for r in rejected:
                hdu = "-" if r["hdu"] is None else r["hdu"]
                print(f"  {r['path']}  HDU {hdu}: {r['reason']}")
    if not len(manifest):
        print("fitsae index: no usable image", file=sys.stderr)
        return 2
    return 2 if args.strict and rejected else 0
