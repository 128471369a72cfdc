"""``fitsae simulate``: write simulated FITS images (toy, GalSim, sky) or digit/MNIST cubes.

Example::

    fitsae simulate --kind sky --n 256 --size 256 --dtype int16 --out runs/sim/sky-256 --seed 0

A thin layer over :func:`fitsae.data.simulate.simulate`; the same arguments write the same
files. Exit 2, with the reason, when the output cannot be written or an argument is refused.
"""

from __future__ import annotations

import argparse
import sys

from fitsae.data.sky import knobs_from_strings
from fitsae.data.simulate import KINDS, simulate
from fitsae.outputs import describe_os_error, unwritable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fitsae simulate",
        description="Write simulated FITS data with the noise sigma in the NOISE header keyword. "
        "toy: Gaussian blobs on a noisy background; galsim: Sersic galaxies and stars, Moffat PSF, "
        "sky, Poisson and read noise; sky: CCD frames drawn from a wide prior (crowded clusters, "
        "saturated stars and bleed trails, galaxies, nebulosity, cosmic rays, bad columns, overscan), "
        "with TRUTH and SIGMA extensions; digits: scikit-learn's 8x8 digits as one cube; mnist: 28x28 "
        "MNIST digits as one cube from --mnist PATH (mnist.npz).",
    )
    parser.add_argument("--kind", dest="scene", required=True, choices=KINDS)
    parser.add_argument("--n", type=int, required=True, help="number of images (cube planes)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (toy, galsim, sky; default 256)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument("--cube", action="store_true", help="toy/galsim/sky: one N-plane cube instead of N files")
    parser.add_argument("--dtype", choices=("float32", "int16"), default="float32",
                        help="galsim/sky storage: float32, or unsigned ADU as int16 + BZERO=32768")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                        help="sky: change a range of fitsae.data.sky.SkyKnobs, e.g. --knob sky=[100,100] "
                        "--knob cluster_probability=1 (repeatable)")
    parser.add_argument("--mnist", metavar="PATH", help="local mnist.npz (else ~/.keras/datasets/mnist.npz if present; fitsae never downloads)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = unwritable(args.out)
    if problem:
        print(f"fitsae simulate: cannot write the images: {problem}", file=sys.stderr)
        return 2
    try:
        files = simulate(args.scene, args.n, args.size, args.out, seed=args.seed, cube=args.cube,
                         dtype=args.dtype, mnist_path=args.mnist,
                         knobs=knobs_from_strings(args.knob) if args.knob else None)
    except ValueError as err:
        print(f"fitsae simulate: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"fitsae simulate: {describe_os_error(err)}", file=sys.stderr)
        return 2
    what = f"{args.n} {args.scene} image(s)"
    print(f"wrote {what} in {len(files)} file(s) to {args.out}")
    return 0
