"""Bits per pixel of the error-bounded and lossless modes, per image, beside RICE_1 and JPEG-XL.

For each input file separately (never pooled: one large or unusual image would rule a pooled
figure) and each quantize level, prints what :func:`fitsae.evaluate.bounded.bounded_rows`
measures — the payload ``fitsae compress --quantize-level q`` writes, and RICE_1 and JPEG-XL
(on RICE's dithered integers) at the same q — with the median step Δ/σ_noise each codec used;
integer images add the lossless rows. ``--family`` scores several residual densities (RICE and
JPEG-XL do not depend on it and are run once).

Usage: python benchmarks/bounded.py --run-dir RUN [--eta 16] [--levels 1,4] [--family laplace,gaussian] FILE...
(RUN: a trained run, e.g. demo/run after ./scripts/demo.sh).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--eta", type=int, help="budget of latent channels (default all)")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--levels", default="1,4")
    p.add_argument("--family", default="best", help="residual densities, comma-separated")
    p.add_argument("files", nargs="+")
    args = p.parse_args()
    from fitsae.codec import artifact
    from fitsae.data.manifest import index_paths
    from fitsae.evaluate.bounded import bounded_rows

    frozen = artifact.load_frozen(artifact.freeze(args.run_dir))
    levels = tuple(float(v) for v in args.levels.split(","))
    print(f"{'file':<28} {'q':>8} {'codec':<16} {'bits/px':>8} {'× RICE':>7} {'Δ/σ':>6} {'ℓ∞/Δ':>6} {'rmse/σ':>7}")
    for path in args.files:
        manifest, _ = index_paths([path], replace(frozen.cfg.data, edge="pad"))
        rows = []
        for i, family in enumerate(args.family.split(",")):
            for r in bounded_rows(frozen, list(manifest), levels=levels, eta=args.eta, tile=args.tile, family=family,
                                  baselines=i == 0):
                rows.append({**r, "codec": f"fitsae {family}" if r["codec"] == "fitsae" else r["codec"]})
        rice = {r["quantize_level"]: r["bits_per_pixel"] for r in rows if r["codec"] == "RICE_1"}
        for r in sorted(rows, key=lambda r: (r["quantize_level"] is None, r["quantize_level"] or 0)):
            q = "lossless" if r["quantize_level"] is None else f"{r['quantize_level']:g}"
            print(f"{Path(path).name[:28]:<28} {q:>8} {r['codec']:<16} {r['bits_per_pixel']:>8.3f} "
                  f"{r['bits_per_pixel'] / rice[r['quantize_level']]:>7.3f} {r['median_step_over_noise']:>6.3f} "
                  f"{r['linf_over_delta']:>6.3f} {r['rmse_over_noise']:>7.4f}", flush=True)


if __name__ == "__main__":
    main()
