"""Cost of a simulated field: ``--kind sky`` against ``--kind galsim``, side by side.

    python benchmarks/simulate.py [--n 40] [--size 256] [--seed 0]

Draws N fields of each kind in one process (GalSim imported and warmed up first, files not
written) and prints CPU seconds per field (process time: on a shared machine wall clock swings
with other jobs' load) — mean, median and the slowest, with what the slowest sky field held.
Target (issue 14): a 256×256 sky field well under a second on average.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fitsae.data.simulate import galsim_field
from fitsae.data.sky import sky_field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sky_field(np.random.default_rng(12345), 32)  # import GalSim and fill its caches
    galsim_field(np.random.default_rng(12345), 32)
    for kind, draw in (("galsim", lambda rng: galsim_field(rng, args.size)),
                       ("sky", lambda rng: sky_field(rng, args.size, dtype="int16"))):
        times, slowest = [], (0.0, None)
        for i in range(args.n):
            start = time.process_time()
            out = draw(np.random.default_rng([args.seed, i]))
            times.append(time.process_time() - start)
            if kind == "sky" and times[-1] > slowest[0]:
                slowest = (times[-1], out.header)
        print(f"{kind:6s} {args.size}x{args.size}: {statistics.mean(times):.3f} s/field mean, "
              f"{statistics.median(times):.3f} median, {max(times):.3f} max (CPU seconds, {args.n} fields)")
    header = slowest[1]
    print("slowest sky field: " + ", ".join(f"{k}={header[k][0]:.4g}" if isinstance(header[k][0], float)
                                            else f"{k}={header[k][0]}"
                                            for k in ("PSF", "FWHM", "NSTARS", "NCLUSTER", "NGALAXY", "NCOSMIC")))


if __name__ == "__main__":
    main()
