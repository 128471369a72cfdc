"""Encode and decode speed of the fitsae codec beside astropy's RICE_1, on the same files.

Writes N GalSim fields (SIZE×SIZE float32), then times, side by side in one process (one
process, TensorFlow's default threads; best of --repeat):

- ``fitsae``: :func:`fitsae.codec.compress_files` at budget ``--eta`` (the model already frozen:
  a first untimed call freezes it) and :func:`fitsae.codec.decompress_file` of each container;
- ``RICE_1``: astropy ``CompImageHDU`` with 256×256 tiles, quantize level 4, subtractive
  dithering, written to and read back from disk (what ``fpack``/``funpack`` do).

Speeds are MB/s of the input's float32 pixels; the ratio fitsae/RICE is printed for each
direction, with the bits/pixel each wrote.

With ``--quantize-level Q`` fitsae runs in its error-bounded mode (``compress --quantize-level Q``:
the pixels themselves coded, each within Δ/2) and RICE_1 at the same q.

With ``--refine STEPS`` (lossy mode, a model trained for rate) fitsae also encodes the same files
with ``compress --refine STEPS`` in the same run, and the cost of refinement is printed as seconds
per Adam step per tile: (refined − plain encode time) / (STEPS × tiles), which includes building
the refiner's graph once per call (use enough tiles and steps), beside the ratio of the two
encode times and the bits/pixel each wrote.

Usage: python benchmarks/codec.py --run-dir RUN [--n 16] [--size 256] [--eta 16] [--repeat 3]
                                  [--quantize-level Q | --refine STEPS]
(RUN: a trained run, e.g. demo/run after ./scripts/demo.sh).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

from fitsae.codec import compress_files, decompress_file  # noqa: E402
from fitsae.data.simulate import simulate  # noqa: E402


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--eta", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quantize-level", type=float, help="fitsae's error-bounded mode at this q (RICE_1 at the same)")
    p.add_argument("--refine", type=int, default=0, help="also encode with compress --refine STEPS (lossy mode)")
    args = p.parse_args()
    if args.refine and args.quantize_level:
        p.error("--refine times the lossy mode: drop --quantize-level")
    from fitsae.codec.quantize import Quantization

    quant = Quantization("quantize", level=args.quantize_level, seed=1) if args.quantize_level else None
    rice_q = args.quantize_level or 4.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        simulate("galsim", args.n, args.size, root / "in", seed=7)
        files = sorted((root / "in").glob("*.fits"))
        megabytes = args.n * args.size * args.size * 4 / 1e6
        pixels = args.n * args.size * args.size
        compress_files(args.run_dir, [str(files[0])], args.eta, root / "warm.fae.fits", quantization=quant)  # freeze

        def fitsae_encode():
            compress_files(args.run_dir, [str(f) for f in files], args.eta, root / "fae", quantization=quant)

        def fitsae_decode():
            for c in sorted((root / "fae").glob("*.fae.fits")):
                decompress_file(c, root / "dec" / c.name.replace(".fae.fits", ".fits"))

        def rice_encode():
            (root / "rice").mkdir(exist_ok=True)
            for f in files:
                data = fits.getdata(f)
                hdu = fits.CompImageHDU(data, compression_type="RICE_1", quantize_level=rice_q, quantize_method=1,
                                        dither_seed=1, tile_shape=(256, 256))
                fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(root / "rice" / f.name, overwrite=True)

        def rice_decode():
            for f in sorted((root / "rice").glob("*.fits")):
                with fits.open(f) as hdul:
                    np.asarray(hdul[1].data)

        def refined_encode():
            compress_files(args.run_dir, [str(f) for f in files], args.eta, root / "refined", refine=args.refine)

        timed = [("fitsae encode", fitsae_encode), ("fitsae decode", fitsae_decode),
                 ("RICE_1 encode", rice_encode), ("RICE_1 decode", rice_decode)]
        if args.refine:
            timed.append((f"refine {args.refine}", refined_encode))
        results = {name: _best(fn, args.repeat) for name, fn in timed}
        fae_bits = 8.0 * sum(f.stat().st_size for f in (root / "fae").glob("*.fae.fits")) / pixels
        refined_bits = 8.0 * sum(f.stat().st_size for f in (root / "refined").glob("*.fae.fits")) / pixels
        rice_bits = 8.0 * sum(f.stat().st_size for f in (root / "rice").glob("*.fits")) / pixels
    print(f"{args.n} GalSim fields of {args.size}², {megabytes:.1f} MB of float32 input; best of {args.repeat}")
    for name, seconds in results.items():
        print(f"  {name:14s} {megabytes / seconds:8.2f} MB/s  ({seconds:.2f} s)")
    for what in ("encode", "decode"):
        ratio = results[f"RICE_1 {what}"] / results[f"fitsae {what}"]
        print(f"  fitsae/RICE_1 {what} speed: {ratio:.3f}")
    mode = f"q={args.quantize_level:g}" if quant else "lossy"
    print(f"  file bits/pixel (with headers): fitsae η≤{args.eta} {mode} {fae_bits:.3f}, RICE_1 q={rice_q:g} "
          f"{rice_bits:.3f}")
    if args.refine:
        tiles = args.n * math.ceil(args.size / 256) ** 2
        plain, refined = results["fitsae encode"], results[f"refine {args.refine}"]
        print(f"  refined/plain encode time: {refined / plain:.2f}; refinement "
              f"{(refined - plain) / (args.refine * tiles):.3f} s per step per 256×256 tile ({tiles} tiles); "
              f"file bits/pixel refined {refined_bits:.3f}")


if __name__ == "__main__":
    main()
