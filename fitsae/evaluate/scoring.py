"""The scoring pass: one checkpoint's AE (through the codec) and PCA on every test tile, every η.

Contract: :func:`score_checkpoint` streams this rank's share of the test tiles once, fills a
:class:`~fitsae.evaluate.metrics.MetricBook` with exact sums, and reduces it over ranks, so the
numbers do not depend on the number of ranks; it returns sums, not a report.
"""

from __future__ import annotations

import math

import numpy as np

from fitsae import distributed
from fitsae.data.evalset import evaluation_batches, to_physical
from fitsae.data.normalize import decoded_sigma
from fitsae.evaluate.comparisons import PCA_STEP, pca_code
from fitsae.evaluate.flux_sums import detect_tiles
from fitsae.evaluate.geometry import Geometry
from fitsae.evaluate.metrics import DataRange, MetricBook
from fitsae.evaluate.pca import PCAFit
from fitsae.evaluate.plots import pick_etas

__all__ = ["score_checkpoint"]


def _example_entry(x, mu, log_var, noise, size: int) -> tuple[list, dict]:
    h, w = x.shape[:2]
    ch, cw = min(h, size), min(w, size)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    cut = (slice(y0, y0 + ch), slice(x0, x0 + cw))

    def plain(a):
        return np.round(np.asarray(a, np.float64)[cut], 5).tolist()

    return plain(x), {"mu": plain(mu), "sigma": plain(np.exp(0.5 * log_var)), "residual": plain(x - mu)}


def _example(batch, x64, noise, i: int, shown: dict, size: int) -> dict:
    """Tile ``i`` of a batch for the examples figure: its input and, at each example η, μ, σ, the
    residual and the η′ the budget kept (normalized units, centre ``size`` × ``size``)."""
    tile = {"tile_id": int(batch["tile_id"][i]), "noise": float(noise[i]), "etas": []}
    for eta, (mu, log_var, kept) in shown.items():
        tile["input"], entry = _example_entry(x64[i, ..., 0], mu[i, ..., 0], log_var[i, ..., 0], noise[i], size)
        tile["etas"].append({"eta": int(eta), "eta_kept": int(kept[i]), **entry})
    return tile


def score_checkpoint(codec, manifest, data_cfg, geometry: Geometry, etas: list[int], pca: PCAFit,
                     seed: int, batch_size: int, max_tiles: int | None, example_size: int):
    """One pass over the test tiles: AE and PCA sums for every η, data range and example tiles.

    PCA keeps k = η components per patch, its coefficients quantized and entropy-coded too
    (:func:`pca_code`), so both methods' rates are real bytes.

    Aperture photometry (:mod:`fitsae.evaluate.flux_sums`): sources found once on each original
    tile, their flux measured again on the AE's, the plain mask's and PCA's reconstructions; where
    the data have a truth, also against the truth's fluxes, with the truth itself and the
    original as references (``truth_flux``: the figure a perfect denoiser would score against
    the original, whose noise it removes; ``original_flux_truth``: the original against the truth).

    The AE is scored through the codec (:class:`fitsae.codec.encoder.TileCodec`, the encoder
    ``fitsae compress`` uses): latents quantized as the file stores them, at budget η each tile
    keeps the first η′ ≤ η channels whose decoded μ is closest to it (:mod:`fitsae.budget`), and
    its rate is the bytes the entropy coder writes for those channels. The plain mask (exactly η
    channels) is scored alongside as ``ae_fixed_mask``, with its own coded bytes.

    Returns the reduced :class:`MetricBook`, the reduced :class:`DataRange`, the test tile count,
    and (rank 0) example tiles in normalized units: the first tile, and the tile of all ranks
    with the largest error at the largest η (unless that is the first one).
    """
    from fitsae.entropy import tables_from_widths

    book = MetricBook()
    top = max(etas)
    pca_tables = tables_from_widths(np.sqrt(np.maximum(pca.eigenvalues[:top], 0.0)), PCA_STEP)
    for eta in etas:  # same keys in the same order on every rank, before any data
        book.gaussian(("ae", eta))
        book.errors(("ae_fixed_mask", eta))
        book.kept(("ae_kept", eta), top)
        book.rate(("ae_rate", eta))
        book.rate(("ae_fixed_mask_rate", eta))
        book.rate(("pca_rate", eta))
        book.errors(("pca", eta))
        book.bands(("ae_bands", eta))
        book.bands(("pca_bands", eta))
        for method in ("ae", "ae_fixed_mask", "pca"):
            book.flux((f"{method}_flux", eta))
            book.flux((f"{method}_flux_truth", eta))
    book.flux(("truth_flux", None))  # a perfect denoiser, measured as every method is: the floor
    book.flux(("original_flux_truth", None))  # the original itself against the truth
    for before, after in zip(etas, etas[1:]):
        book.paired(("ae_change", before, after))
    data_range = DataRange()
    example_etas = pick_etas(etas)
    examples = []
    worst: tuple[float, dict | None] = (-math.inf, None)
    tiles = 0
    for batch in evaluation_batches(manifest, data_cfg, seed, batch_size, max_tiles, truth=True, what="scoring test tiles"):
        x = geometry.crop(np.asarray(batch["x"], np.float32))
        x64 = x.astype(np.float64)
        x_phys = geometry.crop(to_physical(batch["x"], batch, data_cfg))
        noise = np.asarray(batch["noise"], np.float64)
        noise_phys = noise * np.asarray(batch["scale"], np.float64)
        background_phys = batch["background"]
        truth_phys = geometry.crop(batch["truth"])[..., None] if "truth" in batch else None
        data_range.update(x_phys)
        sources = detect_tiles(x_phys, noise_phys)  # on the original, once per tile
        if truth_phys is not None:
            book.flux(("truth_flux", None)).add(sources, truth_phys)
            book.flux(("original_flux_truth", None)).add(sources, x_phys, truth_phys)
        tiles += len(x)
        # The codec keeps decoded values inside each tile's range (recorded in the container).
        lo, hi = x_phys.min(axis=(1, 2, 3)), x_phys.max(axis=(1, 2, 3))

        def clipped_physical(mu, lo=lo, hi=hi, batch=batch):
            phys = to_physical(np.asarray(mu, np.float64)[..., None], batch, data_cfg)[..., 0]
            return np.clip(phys, lo[:, None, None], hi[:, None, None])

        chosen, plain = codec.choose(x[..., 0], x_phys[..., 0], clipped_physical, etas)
        shown = {}  # example η → the chosen (μ, log σ², η′) of every tile in the batch
        previous = None
        for eta in etas:
            pick, plain_pick = chosen[eta], plain[eta]
            log_var = codec.per_tile(pick.symbols, pick.eta, variance=True)[..., None]
            mu, mu_phys = pick.mu[..., None].astype(np.float64), pick.mu_phys[..., None]
            book.errors(("ae_fixed_mask", eta)).update(x_phys, plain_pick.mu_phys[..., None], noise_phys, truth_phys)
            sigma_phys = decoded_sigma(np.exp(0.5 * log_var), mu_phys, batch["offset"], batch["scale"], lo, hi,
                                       data_cfg)
            book.gaussian(("ae", eta)).update(x64, mu, log_var, x_phys, mu_phys, noise_phys, truth_phys, sigma_phys)
            book.bands(("ae_bands", eta)).update(x_phys, mu_phys, background_phys, noise_phys, truth_phys,
                                                 sigma_phys)
            book.kept(("ae_kept", eta), top).update(pick.eta)
            for choice, key in ((pick, "ae_rate"), (plain_pick, "ae_fixed_mask_rate")):
                for i in range(len(x)):
                    k = choice.symbols[i][..., :int(choice.eta[i])]
                    data, _ = codec.code(k, int(choice.eta[i]), choice.background[i])
                    book.rate((key, eta)).update(len(data), codec.estimated_bits(k), geometry.pixels)
            # σ_noise is constant over a tile: the tile's error in noise units ranks η′ exactly
            # as its squared error in physical units does (the codec's criterion).
            tile_error = pick.error / geometry.pixels / noise_phys ** 2
            if previous is not None:
                book.paired(("ae_change", previous[0], eta)).update(previous[1], tile_error)
            previous = (eta, tile_error)
            rec, coded, estimated = pca_code(pca, pca_tables, x64, geometry, eta)
            rec = to_physical(rec.astype(np.float32), batch, data_cfg)
            for nbytes, bits in zip(coded, estimated, strict=True):
                book.rate(("pca_rate", eta)).update(nbytes, bits, geometry.pixels)
            book.errors(("pca", eta)).update(x_phys, rec, noise_phys, truth_phys)
            for method, recon in (("ae", mu_phys), ("ae_fixed_mask", plain_pick.mu_phys), ("pca", rec)):
                book.flux((f"{method}_flux", eta)).add(sources, recon)
                if truth_phys is not None:
                    book.flux((f"{method}_flux_truth", eta)).add(sources, recon, truth_phys)
            book.bands(("pca_bands", eta)).update(x_phys, rec, background_phys, noise_phys, truth_phys)
            if eta in example_etas:
                shown[eta] = (mu, log_var, pick.eta)
        if not examples and distributed.is_root():
            examples.append({**_example(batch, x64, noise, 0, shown, example_size), "shown_as": "first tile"})
        i = int(np.argmax(previous[1]))  # previous: the largest budget's per-tile error
        if previous[1][i] > worst[0]:
            worst = (float(previous[1][i]), _example(batch, x64, noise, i, shown, example_size))
    # The worst tile of all ranks joins the first one: where the model fails is worth a look.
    candidates = distributed.comm().gather(worst, root=0)
    if distributed.is_root():
        error, tile = max(candidates, key=lambda c: c[0])
        if tile is not None and all(t["tile_id"] != tile["tile_id"] for t in examples):
            examples.append({**tile, "shown_as": f"worst tile: RMSE/σ_noise {math.sqrt(error):.3g} at η={top}"})
    book.reduce()
    data_range.reduce()
    tiles = int(distributed.allreduce_sum(tiles))
    return book, data_range, tiles, examples
