"""The report of one checkpoint: per-η rows, compression ratios, the monotonicity facts, the JSON.

Contract: :func:`build_report` turns reduced sums (:mod:`fitsae.evaluate.scoring`) and the
evaluation's fixed context into the ``report.json`` dictionary whose keys DESIGN.md promises;
it computes nothing from pixels, so the same sums always give the same report.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from fitsae import __version__, distributed
from fitsae.budget import EXHAUSTIVE_UP_TO
from fitsae.config import to_dict
from fitsae.data.evalset import input_bits as sampled_input_bits
from fitsae.evaluate.comparisons import PCA_STEP
from fitsae.evaluate.geometry import Geometry
from fitsae.evaluate.calibration import Z_BIN_EDGES
from fitsae.evaluate.metrics import MetricBook

__all__ = ["build_report", "monotonic_note", "band_trend", "SIGNIFICANT_SE", "RISE_TOLERANCE"]


def _results(book: MetricBook, geometry: Geometry, etas: list[int], peak: float) -> list[dict]:
    rows = []
    for eta in etas:
        values = geometry.latent_values(eta)
        kept = book[("ae_kept", eta)].summary()
        rate = book[("ae_rate", eta)].summary()
        ae = {**book[("ae", eta)].summary(peak), "bands": book[("ae_bands", eta)].summary(), **kept, **rate,
              "photometry": book[("ae_flux", eta)].summary(), **_truth_photometry(book, "ae", eta)}
        pca = {**book[("pca", eta)].summary(peak), "bands": book[("pca_bands", eta)].summary(),
               **book[("pca_rate", eta)].summary(), "quantization_step": PCA_STEP,
               "photometry": book[("pca_flux", eta)].summary(), **_truth_photometry(book, "pca", eta)}
        bpp = rate["bits_per_pixel_coded"]  # compression_ratio is added by _with_ratios
        rows.append({
            "eta": int(eta),
            "latent_values": values,
            "bits_per_pixel": bpp,
            "ae": ae,
            "ae_fixed_mask": {**book[("ae_fixed_mask", eta)].summary(peak),
                              **book[("ae_fixed_mask_rate", eta)].summary(),
                              "photometry": book[("ae_fixed_mask_flux", eta)].summary(),
                              **_truth_photometry(book, "ae_fixed_mask", eta)},
            "pca": pca,
        })
    return rows



def _truth_photometry(book: MetricBook, method: str, eta) -> dict:
    """``photometry_truth`` (the fluxes against the truth's) where the data had a truth, else nothing."""
    summary = book[(f"{method}_flux_truth", eta)].summary()
    return {"photometry_truth": summary} if summary["n_used"] else {}


def _photometry_reference(book: MetricBook) -> dict:
    """What the photometry figures are to be read against, where the data had a truth."""
    floor = book[("truth_flux", None)].summary()
    if not floor["n_used"]:
        return {}
    return {"photometry_reference": {
        "truth_vs_original": floor, "original_vs_truth": book[("original_flux_truth", None)].summary(),
        "note": "truth_vs_original: the noiseless truth measured as every reconstruction is (against the "
                "original): the score of a perfect denoiser, whose fluxes differ from the original's by the "
                "noise in the apertures; original_vs_truth: the original against the truth. Each method's "
                "photometry_truth is its fluxes against the truth's, same sources (SNR cut on the original)"}}


def _with_ratios(rows: list[dict], input_bits: float) -> list[dict]:
    """Every compression ratio as input bits ÷ stored bits: the row's (``bits_per_pixel``, η
    latent values of 32 bits), the AE's (its coded bits when the codec measured them, else the
    stored ones), the plain mask's and PCA's (their own coded bits when present, else the row's)."""
    for row in rows:
        row["compression_ratio"] = input_bits / row["bits_per_pixel"]
        for method in ("ae", "ae_fixed_mask", "pca"):
            entry = row.get(method)
            if entry is None:
                continue
            bits = entry.get("bits_per_pixel_coded") or entry.get("bits_per_pixel_stored") or row["bits_per_pixel"]
            entry["compression_ratio"] = input_bits / bits
    return rows


# A rise of the pooled error counts as significant when the mean per-tile change exceeds this many
# standard errors (about 2.5 % one-sided for a normal mean).
SIGNIFICANT_SE = 2.0


# A step to the next η counts as a rise when the error grows by more than this fraction.
RISE_TOLERANCE = 1e-3


def _rises(values: list[tuple[int, float | None]]) -> list[dict]:
    """Steps from one scored η to the next where the error grows by more than ``RISE_TOLERANCE``.

    ``values`` are (η, error) in η order; a missing error (None) never counts as a rise.
    """
    return [{"from_eta": a, "to_eta": b, "increase": vb - va, "relative_increase": (vb - va) / va}
            for (a, va), (b, vb) in zip(values, values[1:])
            if va is not None and vb is not None and vb > va * (1 + RISE_TOLERANCE)]


def monotonic_note(rows: list[dict], book: MetricBook) -> dict:
    """Does the AE error fall (weakly) as η grows? Returned as a fact in the report, not hidden.

    ``ae_error_nonincreasing_in_eta`` is the plain reading: no step from one scored η to the next
    raises ``rmse_over_noise`` by more than 0.1 %. Each rise is listed with the paired per-tile
    statistics (:class:`~fitsae.evaluate.tallies.PairedChangeSums`) and ``significant`` when it is
    larger than ``SIGNIFICANT_SE`` standard errors of the tile-to-tile scatter;
    ``ae_error_increase_significant`` says whether any is.

    The AE is scored with its budget choice (:mod:`fitsae.budget`), under which no tile's error
    can grow with η; a rise here means the choice is broken. The plain mask's reading
    (``ae_fixed_mask_*``) is the model's own behaviour and may rise: it is reported, not hidden.
    """
    rises = []
    for rise in _rises([(r["eta"], r["ae"]["rmse_over_noise"]) for r in rows]):
        paired = book[("ae_change", rise["from_eta"], rise["to_eta"])].summary()
        se = paired["standard_error"]
        rises.append({"from_eta": rise["from_eta"], "to_eta": rise["to_eta"], "increase": rise["increase"],
                      "mean_tile_change": paired["mean_change"], "standard_error": se,
                      "n_tiles": paired["n_tiles"],
                      "significant": bool(not math.isfinite(se) or paired["mean_change"] > SIGNIFICANT_SE * se)})
    plain_rises = _rises([(r["eta"], r.get("ae_fixed_mask", {}).get("rmse_over_noise")) for r in rows])
    return {"ae_error_nonincreasing_in_eta": not rises, "ae_error_increases": rises,
            "ae_selection": "budget: each tile keeps the first η′ ≤ η latent channels whose μ has the "
                            "smallest squared error among fitsae.budget.candidates(η) (every η′ ≤ η up to "
                            f"{EXHAUSTIVE_UP_TO} channels), as `fitsae compress` does per plane",
            "ae_fixed_mask_nonincreasing_in_eta": not plain_rises, "ae_fixed_mask_increases": plain_rises,
            "ae_error_increase_significant": any(r["significant"] for r in rises),
            "ae_error_increase_test": f"paired per-tile change of mean(((x − x̂)/σ_noise)²) > "
                                      f"{SIGNIFICANT_SE:g} standard errors",
            "ae_error_by_band": band_trend(rows)}


def band_trend(rows: list[dict]) -> list[dict]:
    """For each brightness band: does the AE's error there fall (weakly) as η grows?

    Same 0.1 % tolerance as the pooled reading. ``share_of_error`` is the band's part of the AE's
    squared error at the largest η, so a rise confined to a band that is a tiny fraction of the
    pixels but most of the error is visible as such.
    """
    if not rows or "bands" not in rows[0]["ae"]:
        return []
    out = []
    for i, band in enumerate(rows[0]["ae"]["bands"]):
        rises = _rises([(r["eta"], r["ae"]["bands"][i]["rmse_over_noise"]) for r in rows])
        out.append({"snr_low": band["snr_low"], "snr_high": band["snr_high"],
                    "pixel_fraction": band["pixel_fraction"],
                    "share_of_error": rows[-1]["ae"]["bands"][i]["share_of_error"],
                    "nonincreasing_in_eta": not rises, "rises": rises})
    return out




def build_report(ctx, step: int, book: MetricBook, data_range, tiles: int, examples: list) -> dict:
    """The ``report.json`` dictionary of checkpoint ``step`` from its reduced sums.

    ``ctx`` is the evaluation's fixed part (:class:`fitsae.evaluate.context.EvalContext`: options,
    config, test manifest, geometry, η, PCA fit, classical baselines).
    """
    opts = ctx.options
    peak = data_range.peak
    input_bitpix, input_bits = sampled_input_bits(ctx.test_manifest, opts.max_tiles)
    results = _with_ratios(_results(book, ctx.geometry, ctx.etas, peak), input_bits)
    report = {
        "schema_version": 1,
        "fitsae_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "run_dir": str(Path(opts.run_dir).resolve()),
            "checkpoint_step": int(step),
            "train_steps": int(ctx.cfg.train.steps),
            "kind": ctx.geometry.kind,
            "latent_channels": ctx.geometry.channels,
            "stride": ctx.geometry.stride,
            "config": to_dict(ctx.cfg.model),
            "refine_steps": int(opts.refine),
        },
        "data": {
            "paths": [str(p) for p in opts.data],
            "manifest": str(opts.out_dir / "test.manifest.jsonl"),
            "n_tiles": tiles,
            **ctx.geometry.as_dict(),
            "pixels_per_tile": ctx.geometry.pixels,
            "normalization": getattr(ctx.data_cfg, "normalization", None),
            "psnr_peak": peak,
            "psnr_peak_definition": "max − min of all evaluated test pixels, physical units",
            "data_min": data_range.lo,
            "data_max": data_range.hi,
            "input_bitpix": input_bitpix,
            "input_bits_per_pixel": input_bits,
            "planes_with_truth": sum(1 for row in ctx.test_manifest if row.truth_hdu is not None),
            "units": {
                "mse": "physical units² (after BSCALE/BZERO), pooled over pixels",
                "rmse_over_noise": "sqrt(mean(((x − x̂)/σ_noise)²)), σ_noise per tile in physical units; "
                                   "measured against the noisy input, so a reconstruction that removes the "
                                   "noise (AE, PCA) scores about 1, while near-lossless fpack goes below",
                "psnr": "dB, 10 log10(psnr_peak² / mse)",
                "nll": "nats per pixel, Gaussian, normalized units (noise ≈ 1)",
                "sigma_z_std": "std of (x − μ)/σ, normalized units",
                "sigma_z_std_physical": "std of (x − μ)/σ in physical units, σ as `fitsae decompress --sigma` "
                                        "writes it (the model's Gaussian taken exactly through the stretch); "
                                        "coverage_*_physical likewise; in ae.bands, the same within each "
                                        "brightness band",
                "error": "e = x̂ − x, reconstruction minus reference; mean_error (physical units) and "
                         "mean_error_over_noise are its mean (the bias), max_abs_error(_over_noise) its ℓ∞ norm, "
                         "median/p99_abs_error_over_noise the median and 99th percentile of |e|/σ_noise "
                         "(from a histogram with 50 bins per decade: within 4.7 %)",
                "_truth": "the same figures against the noiseless truth (TRUTH planes of simulated data); "
                          "null when no evaluated plane has one",
                "compression_ratio": "input bits (|BITPIX| per pixel) ÷ stored bits",
            },
            "ranks": distributed.workers().size,
        },
        "results": results,
        "headline": {"model": "ae_fixed_mask", "codec": "ae",
                     "note": "the model's result is the plain mask (exactly η channels); the budget (ae) is the "
                             "codec's per-tile choice of η′ ≤ η on top of it"},
        "rate_note": "AE bits_per_pixel: 8 × the bytes the codec's entropy coder writes for each tile's kept "
                     "latents / pixels (fitsae.codec, tables frozen from the checkpoint); PCA's coefficients "
                     f"are quantized with step {PCA_STEP:g} (normalized units) and coded the same way, under Laplace tables of its "
                     "eigenvalues (pca.bits_per_pixel_coded); every compression_ratio is input bits ÷ stored bits",
        **monotonic_note(results, book),
        **_photometry_reference(book),
        "baselines": {**ctx.baselines, "fpack_tiles": opts.fpack_tiles,
                      "fpack_rate": "bits_per_pixel: compressed heap bytes (PCOUNT) × 8 / pixels; "
                                    "bits_per_pixel_with_headers: the whole file as written × 8 / pixels",
                      "jpegxl_rate": "bits_per_pixel: JPEG-XL lossless bytes of RICE_1's quantized integers "
                                     "at the same q × 8 / pixels; bits_per_pixel_with_headers: the same FITS "
                                     "file as RICE_1's with the JPEG-XL data as its heap"},
        "pca": ctx.pca_summary(),
        "calibration": {"bin_edges": [float(e) for e in Z_BIN_EDGES],
                        "note": "ae.z_hist counts include an underflow (first) and overflow (last) bin"},
        "examples": {"units": "normalized (noise ≈ 1)", "tiles": examples},
    }
    return report
