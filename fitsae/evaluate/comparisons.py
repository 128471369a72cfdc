"""The comparisons an AE is scored against: PCA fitted on training tiles, and fpack / JPEG-XL.

Contract: PCA is fitted once per evaluation on a sample of *training* tiles (never the test
tiles), identically on every rank, and codes its coefficients like the AE's latents (quantized,
entropy-coded), so both rates are real bytes; the classical codecs compress each test tile's
pixels exactly as stored. None of this depends on the checkpoint, so it is done once.
"""

from __future__ import annotations

import logging

import numpy as np

from fitsae.data.evalset import evaluation_batches, spread_sample, to_physical
from fitsae.evaluate import baselines as baselines_mod
from fitsae.evaluate.geometry import Geometry
from fitsae.evaluate.metrics import MetricBook
from fitsae.evaluate.options import EvaluationError
from fitsae.evaluate.pca import PCAFit, StreamingPCA, from_patches, to_patches

__all__ = ["PCA_STEP", "fit_pca", "pca_code", "classical_baselines"]

log = logging.getLogger("fitsae")


def fit_pca(manifest, data_cfg, geometry: Geometry, seed: int, batch_size: int, tiles: int) -> PCAFit:
    """Stream a sample of training tiles through :class:`StreamingPCA`; identical fit on all ranks."""
    pca = StreamingPCA(geometry.pca_dim)
    for batch in evaluation_batches(manifest, data_cfg, seed, batch_size, tiles, what="PCA fit on training tiles"):
        x = geometry.crop(np.asarray(batch["x"], dtype=np.float64))
        pca.update(to_patches(x, geometry.patch))
    pca.reduce()
    return pca.fit()


# PCA's coefficients are quantized on a grid of the noise level (normalized units, σ ≈ 1) — the
# step fpack's q = 1 uses for pixels — and coded under Laplace tables of the fitted eigenvalues.
PCA_STEP = 1.0


def pca_code(fit: PCAFit, tables, x: np.ndarray, geometry: Geometry, eta: int):
    """PCA at k = η per patch, coefficients quantized and entropy-coded like the AE's latents.

    Returns the reconstruction (B, H, W, 1) from the quantized coefficients and, per tile, the
    coded bytes and the tables' estimate in bits.
    """
    from fitsae.entropy import encode_latents

    rows = to_patches(x, geometry.patch)
    k = np.rint(fit.coefficients(rows, eta) / PCA_STEP).astype(np.int64)
    rec = from_patches(fit.from_coefficients(k * PCA_STEP), geometry.shape, geometry.patch)[..., None]
    per_tile = k.reshape(len(x), -1, k.shape[-1])
    coded = [len(encode_latents(tables, tile)[0]) for tile in per_tile]
    estimated = [tables.ideal_bits(tile) for tile in per_tile]
    return rec, coded, estimated


def classical_baselines(manifest, data_cfg, geometry: Geometry, seed: int, batch_size: int,
                        tiles: int, peak: float) -> dict:
    """Every fpack and JPEG-XL setting on the first ``tiles`` test tiles, reduced over ranks.

    The codecs compress each tile's pixels as stored in its file (what fpack would read), and
    are scored against them and, where known, against the truth. Returns ``{"fpack": [...],
    "jpegxl": [...]}``, one entry per setting with its label, rates (payload and whole file, and
    the ratio to the input's own bits) and errors. The lossless settings run when every test
    plane is integer (BITPIX > 0) with no masked pixel, so that every tile is exactly integers.
    """
    book = MetricBook()
    sample = spread_sample(manifest, tiles)
    integer = data_cfg.edge != "pad" and all(row.bitpix > 0 and row.n_masked == 0 for row in sample)
    reasons = {s: baselines_mod.applicable(s, geometry.shape, integer) for s in baselines_mod.DEFAULT_SETTINGS}
    settings = [s for s, reason in reasons.items() if reason is None]
    for setting in settings:
        book.codec(setting)
    for batch in evaluation_batches(manifest, data_cfg, seed, batch_size, tiles, truth=True, originals=True,
                          what="baselines on test tiles"):
        filled = geometry.crop(to_physical(batch["x"], batch, data_cfg))[..., 0]
        stored = geometry.crop(batch["pixels"])
        # Masked pixels (NaN, BLANK) keep the value the pipeline filled them with, as for the AE.
        x_phys = np.where(np.isfinite(stored), stored, filled)
        noise_phys = np.asarray(batch["noise"], np.float64) * np.asarray(batch["scale"], np.float64)
        truth = geometry.crop(batch["truth"]) if "truth" in batch else None
        for i in range(len(x_phys)):
            tile_id = int(batch["tile_id"][i])
            bitpix, bscale, bzero = int(batch["bitpix"][i]), float(batch["bscale"][i]), float(batch["bzero"][i])
            ints = None
            if bitpix > 0:
                try:
                    ints = (baselines_mod.stored_integers(x_phys[i], bitpix, bscale, bzero), bscale, bzero)
                except ValueError as err:
                    if integer:
                        raise EvaluationError(f"test tile {tile_id}: {err}") from err
            for setting in settings:
                out = baselines_mod.roundtrip(x_phys[i], setting, tile_id=tile_id, stored=ints)
                entry = book.codec(setting)
                entry.update(x_phys[i:i + 1], out.decoded[None], noise_phys[i:i + 1],
                             None if truth is None else truth[i:i + 1])
                entry.add_bytes(out.payload_bytes, out.table_bytes, out.file_bytes, x_phys[i].size * abs(bitpix))
    book.reduce()
    results = {"fpack": [], "jpegxl": []}
    for setting in settings:
        results[setting.family].append({**setting.as_dict(), **book[setting].summary(peak)})
    # Lossless settings on float data are expected to be left out; anything else is worth a warning.
    for lossless in (True, False):
        for reason in sorted({r for s, r in reasons.items() if r is not None and s.lossless == lossless}):
            (log.info if lossless else log.warning)("baselines: %s", reason)
    return results

