"""Where the codec's aperture-flux error comes from: per SNR band, against the original and the truth.

For simulated float fields that carry a ``TRUTH`` plane (``fitsae simulate``), compresses the files
with a trained run at each budget η (:func:`fitsae.codec.compress_files`), decodes them, detects
sources on each original at 5σ (σ: the fpack noise estimate of the whole image; ``fitsae evaluate``
takes it per tile from the index, so its source counts can differ slightly) and measures the same
apertures on the decoded image, the original and the truth (:mod:`fitsae.evaluate.photometry`, as
``fitsae evaluate`` does). Prints, per band of the sources' SNR on the original (and all SNR ≥ 20
sources together), the median |ΔF|/F of the decoded image against the original and against the
truth, its signed median against the truth (the bias), and the truth's own against the original: the
noise floor, where a codec that kept the sources exactly and dropped all of the noise would stand.
Why: the median over all sources (the figure in report.json) mixes faint sources, whose error is
their noise, with bright ones, whose error is the model's; this says which one sets it.

Usage: python benchmarks/photometry.py --run-dir RUN [--eta 4,16] FILE_OR_DIR...
(RUN: a trained run, e.g. demo/run after ./scripts/demo.sh; files e.g.
``fitsae simulate --kind galsim --n 64 --size 256 --seed 456 --out heldout``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402

SNR_EDGES = (20.0, 30.0, 50.0, 100.0, 200.0, np.inf)


def _fields(paths: list[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.fits")) if p.is_dir() else [p]
    return files


def _per_source(original: Path, decoded: Path) -> np.ndarray:
    """Rows (snr, vs original, vs truth, truth vs original) of the SNR ≥ 20 sources of one field."""
    from fitsae.data.normalize import noise_estimate
    from fitsae.evaluate import photometry

    with fits.open(original) as hdul:
        data, truth = (np.asarray(hdul[name].data, dtype=np.float64) for name in (0, "TRUTH"))
    sources = photometry.detect_sources(data, noise_estimate(data)[0])
    use = sources.snr >= 20
    rec = photometry.aperture_fluxes(sources, fits.getdata(decoded))[use]
    true = photometry.aperture_fluxes(sources, truth)[use]
    orig = sources.flux[use]
    return np.column_stack([sources.snr[use], (rec - orig) / orig, (rec - true) / true, (true - orig) / orig])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--eta", default="4", help="budgets, comma-separated")
    p.add_argument("files", nargs="+", help="simulated FITS files (or directories) with TRUTH planes")
    args = p.parse_args()
    from fitsae.codec import compress_files, decompress_file

    files = _fields(args.files)
    for eta in (int(v) for v in args.eta.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            compress_files(args.run_dir, [str(f) for f in files], eta, root / "fae")
            rows = []
            for f in files:
                decoded = root / "dec" / f.name
                decompress_file(root / "fae" / f.name.replace(".fits", ".fae.fits"), decoded)
                rows.append(_per_source(f, decoded))
        table = np.concatenate(rows)
        print(f"η ≤ {eta}: {len(table)} sources of SNR ≥ 20 in {len(files)} fields; median |ΔF|/F in %")
        print(f"  {'SNR band':<12} {'n':>5} {'vs original':>12} {'vs truth':>9} {'bias vs truth':>14} "
              f"{'floor':>6}")
        bands = list(zip(SNR_EDGES[:-1], SNR_EDGES[1:])) + [(SNR_EDGES[0], np.inf)]
        for low, high in bands:
            band = table[(table[:, 0] >= low) & (table[:, 0] < high)]
            if not len(band):
                continue
            name = f"{low:g}–{high:g}" if high < np.inf else f"≥ {low:g}"
            if (low, high) == bands[-1]:
                name = "all ≥ 20"
            print(f"  {name:<12} {len(band):>5} {100 * np.median(abs(band[:, 1])):>12.2f} "
                  f"{100 * np.median(abs(band[:, 2])):>9.2f} {100 * np.median(band[:, 2]):>+14.2f} "
                  f"{100 * np.median(abs(band[:, 3])):>6.2f}")


if __name__ == "__main__":
    main()
