"""Rate–distortion of a trained β-VAE across a grid of log β, on held-out tiles.

Contract: one row per log β (:func:`rate_distortion`). The **rate** is the posterior's KL to the
prior, in nats per image and bits per pixel: what bits-back / relative-entropy coding of a
posterior sample costs, a bound, not bytes on disk. The **distortion** is that sample's
reconstruction error, defined as for the tunable AE's rows of ``report.json``
(:class:`fitsae.evaluate.error_sums.ErrorSums`); ``mean_z`` holds the same for the posterior mean
(storing ``encode(x)`` as floats) and the variance decoder's calibration. With operating points
fitted on training tiles (:mod:`fitsae.evaluate.bvae_coding`), ``coded`` holds the file's truth:
the posterior mean quantized and entropy-coded, its real bytes per pixel and the error of the
image decoded from them. Sums are reduced over ranks once at the end, so every rank returns the
same rows.

Why: one β-conditioned network is a whole RD curve; each log β is an operating point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from fitsae import distributed
from fitsae.data.evalset import to_physical
from fitsae.evaluate.metrics import DataRange, MetricBook

__all__ = [
    "default_logbetas",
    "rate_distortion",
    "bvae_report",
    "write_bvae_report",
    "format_bvae_table",
    "plot_rate_distortion",
]

REPORT_NAME = "bvae_rd.json"
PLOT_NAME = "bvae_rd.png"


def default_logbetas(model, n: int = 7) -> list[float]:
    """``n`` log β evenly spanning the range the model was trained on (it has seen nothing outside)."""
    a, b = model.model_config.bvae.logbeta_range
    return [round(float(v), 6) for v in np.linspace(a, b, n)]


def _crop(model, x: np.ndarray) -> np.ndarray:
    """The part of each tile the model scores (:meth:`fitsae.models.protocol.TileScoring.scored_shape`),
    the same region the tunable AEs are scored on."""
    th, tw = x.shape[1:3]
    h, w = model.scored_shape((th, tw))
    y0, x0 = (th - h) // 2, (tw - w) // 2
    return x[:, y0:y0 + h, x0:x0 + w]


def rate_distortion(
    model,
    batches: Iterable[dict],
    logbetas: Sequence[float],
    data_cfg=None,
    seed: int = 0,
    points: Sequence | None = None,
) -> list[dict]:
    """Score ``model`` at each log β on every batch.

    Parameters
    ----------
    model
        A :class:`fitsae.models.bvae.BetaVAE`.
    batches
        Evaluation batches as produced by ``Pipeline.evaluation``: dicts with ``"x"`` (B, H, W, 1)
        normalized, ``"noise"`` (B,) in normalized units and, for physical units, ``"offset"`` and
        ``"scale"``.
    logbetas
        The log10 β grid.
    data_cfg
        The run's DataConfig. Given, errors are in physical units (as the AE rows of report.json);
        ``None`` keeps normalized units.
    seed
        Seeds the posterior samples so an evaluation is repeatable.
    points
        One :class:`fitsae.evaluate.bvae_coding.OperatingPoint` per log β (same order as the sorted
        ``logbetas``): adds the ``coded`` entry of each row.

    Returns
    -------
    list of dict
        One row per log β, sorted by log β: ``logbeta``, ``beta``, ``rate_nats_per_image``,
        ``bits_per_pixel``, ``mse``, ``rmse_over_noise``, ``psnr``, ``mean_z`` (same errors from
        the posterior mean, plus the σ head's ``nll``, ``sigma_z_std``, ``coverage_1sigma``,
        ``coverage_2sigma`` there), ``n_images`` and, with ``points``, ``coded`` (the errors of the
        image decoded from the coded latents, ``bits_per_pixel_coded`` from real bytes,
        ``bits_per_pixel_estimated`` from the tables, and the step the fit chose).
    """
    from fitsae.evaluate.bvae_coding import code_tiles

    import tensorflow as tf

    logbetas = sorted(float(v) for v in logbetas)
    if not logbetas:
        raise ValueError("rate_distortion needs at least one log β")
    if points is not None and [p.logbeta for p in points] != logbetas:
        raise ValueError(f"rate_distortion: operating points {[p.logbeta for p in points]} are not the "
                         f"sorted log β {logbetas}")

    @tf.function(reduce_retracing=True)
    def score(x, logbeta, noise):
        return model.rate_distortion_terms(x, logbeta, noise, seed)

    def physical(values, batch):
        if data_cfg is None:
            return np.asarray(values, np.float64)
        return to_physical(values, batch, data_cfg)

    kl_sums = np.zeros(len(logbetas))
    book = MetricBook()
    sampled = [book.errors(("sampled", k)) for k in range(len(logbetas))]
    mean_z = [book.gaussian(("mean_z", k)) for k in range(len(logbetas))]
    coded = [(book.errors(("coded", k)), book.rate(("coded_rate", k))) for k in range(len(points or []))]
    data_range = DataRange()
    images = 0.0
    pixels_per_image = 0.0
    for batch in batches:
        x = _crop(model, np.asarray(batch["x"], np.float32))
        noise = np.asarray(batch["noise"], np.float32).reshape(-1)
        noise_phys = noise.astype(np.float64)
        if data_cfg is not None:
            noise_phys = noise_phys * np.asarray(batch["scale"], np.float64).reshape(-1)
        x_phys = physical(x, batch)
        data_range.update(x_phys)
        images += len(x)
        pixels_per_image = float(np.prod(x.shape[1:]))
        for k, logbeta in enumerate(logbetas):
            out = score(tf.constant(x), tf.fill([len(x)], tf.constant(logbeta, tf.float32)), tf.constant(noise))
            kl_sums[k] += float(np.sum(out["kl"].numpy(), dtype=np.float64))
            sampled[k].update(x_phys, physical(out["recon"].numpy(), batch), noise_phys)
            recon_mean_z = out["recon_mean_z"].numpy()
            mean_z[k].update(x, recon_mean_z, out["log_var_mean_z"].numpy(), x_phys,
                             physical(recon_mean_z, batch), noise_phys)
            if points is not None:
                recon, sizes, estimated = code_tiles(model, points[k], x)
                coded[k][0].update(x_phys, physical(recon, batch), noise_phys)
                coded[k][1].update(sum(sizes), sum(estimated), x.size)

    # The error sums reduce in the book (sums and ℓ∞ maxima); pixels_per_image is reduced as a max
    # (tiles share one size).
    totals = distributed.allreduce_sum(np.concatenate([[images], kl_sums]))
    book.reduce()
    pixels_per_image = distributed.allreduce_max(pixels_per_image)
    data_range.reduce()
    images, kl_sums = float(totals[0]), totals[1:1 + len(logbetas)]
    if images == 0:
        raise ValueError("rate_distortion: no evaluation images on any rank")

    rows = []
    for k, logbeta in enumerate(logbetas):
        nats = kl_sums[k] / images
        rows.append({
            "logbeta": logbeta,
            "beta": 10.0 ** logbeta * model.model_config.bvae.beta_ref,
            "rate_nats_per_image": nats,
            "bits_per_pixel": nats / (math.log(2.0) * pixels_per_image),
            **sampled[k].summary(data_range.peak),
            "mean_z": {key: value for key, value in mean_z[k].summary(data_range.peak).items() if key != "z_hist"},
            "n_images": int(images),
        })
        if points is not None:
            rows[-1]["coded"] = {**coded[k][1].summary(), **coded[k][0].summary(data_range.peak),
                                 **points[k].summary()}
    return rows


def bvae_report(model, step: int, batches: Iterable[dict], logbetas: Sequence[float] | None = None,
                data_cfg=None, seed: int = 0, fit_batches: Iterable[dict] | None = None) -> dict:
    """The β-VAE's evaluation of one checkpoint, as a JSON-ready dict.

    ``{"model": {...}, "rate_definition": ..., "results": [row per log β]}`` with the rows of
    :func:`rate_distortion`. ``fitsae evaluate`` calls this for ``kind: bvae`` runs instead of the
    per-η scoring of the tunable AEs. ``fit_batches`` (training tiles) fit the quantization and
    tables of each log β (:func:`fitsae.evaluate.bvae_coding.fit_operating_points`), and the rows
    get their coded rate; without them the rate is the KL alone.
    """
    from fitsae.evaluate.bvae_coding import fit_operating_points

    logbetas = sorted(float(v) for v in (logbetas or default_logbetas(model)))
    mc = model.model_config
    points = None
    if fit_batches is not None:
        points = fit_operating_points(model, fit_batches, logbetas, lambda x: _crop(model, x))
    return {
        "model": {
            "kind": "bvae",
            "architecture": mc.bvae.architecture,
            "checkpoint_step": int(step),
            "latent_channels": int(model.latent_channels),
            "stride": int(model.stride),
            "logbeta_range": list(mc.bvae.logbeta_range),
            "beta_ref": mc.bvae.beta_ref,
        },
        "rate_definition": "KL(q(z|x, logβ) || N(0, 1)) in nats per image (bits-back rate of a posterior "
                           "sample); bits_per_pixel = nats / (ln 2 · pixels)",
        "distortion_definition": "mse and rmse_over_noise of the reconstruction from a posterior sample "
                                 "(mean_z: from the posterior mean), as the AE rows of report.json",
        "calibration_definition": "mean_z.sigma_z_std: std of (x − μ)/σ with μ, σ decoded from the posterior "
                                  "mean (where the σ head is trained and used); coverage_1sigma/2sigma: "
                                  "fractions with |x − μ| < σ, 2σ (0.683, 0.954 when calibrated); "
                                  "normalized units",
        "coded_definition": "coded: the posterior mean rounded to k = round(μ_z / step), steps per channel "
                            "(step_scale × the channel's geometric-mean posterior width) chosen on training "
                            "tiles by distortion + β·rate, k entropy-coded (ANS) under tables fitted there; "
                            "bits_per_pixel_coded = 8 × real bytes / pixels; errors of the mean decoded from "
                            "k·step",
        "units": "physical" if data_cfg is not None else "normalized",
        "results": rate_distortion(model, batches, logbetas, data_cfg=data_cfg, seed=seed, points=points),
    }


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_bvae_report(report: dict, out_dir: str | Path, compare: dict | None = None) -> list[Path]:
    """Write ``bvae_rd.json`` and ``bvae_rd.png`` (rank 0 only calls this).

    ``compare`` is a tunable AE's ``report.json`` (it holds the AE, PCA and fpack rows) to draw on the
    same axes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    path.write_text(json.dumps(_finite(report), indent=2) + "\n")
    return [path, plot_rate_distortion(report["results"], out_dir / PLOT_NAME, compare)]


def format_bvae_table(report: dict) -> str:
    """The RD rows as a fixed-width table for the terminal (coded columns empty without a fit)."""
    lines = [f"{'log10 β':>8} {'KL bits/px':>10} {'rmse/σ':>8} {'coded bits/px':>13} {'rmse/σ coded':>12} "
             f"{'rmse/σ (μ_z)':>13} {'std z (μ_z)':>12} {'cov 1σ':>7}"]
    for r in report["results"]:
        coded = r.get("coded") or {}
        bits, err = coded.get("bits_per_pixel_coded"), coded.get("rmse_over_noise")
        lines.append(
            f"{r['logbeta']:>+8.2f} {r['bits_per_pixel']:>10.4f} {r['rmse_over_noise']:>8.4f} "
            f"{'' if bits is None else f'{bits:.4f}':>13} {'' if err is None else f'{err:.4f}':>12} "
            f"{r['mean_z']['rmse_over_noise']:>13.4f} {r['mean_z']['sigma_z_std']:>12.3f} "
            f"{r['mean_z']['coverage_1sigma']:>7.3f}"
        )
    return "\n".join(lines)


def plot_rate_distortion(rows: list[dict], path: str | Path, report: dict | None = None) -> Path:
    """RMSE/σ_noise against bits per pixel: the β-VAE's coded points and its KL bound, and every
    method of ``report`` (a tunable AE's report.json: AE, PCA, fpack, JPEG-XL, as its own
    rate–distortion plot draws them, :func:`fitsae.evaluate.plots.rd_series`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    from fitsae.evaluate.plots import rd_series

    fig = Figure(figsize=(7.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rows = sorted(rows, key=lambda r: r["logbeta"])
    curves = [("β-VAE, KL bound (sampled z)", "D--", [(r["bits_per_pixel"], r["rmse_over_noise"]) for r in rows])]
    if all(r.get("coded") for r in rows):
        curves.insert(0, ("β-VAE, coded latents (real bytes)", "D-",
                          [(r["coded"]["bits_per_pixel_coded"], r["coded"]["rmse_over_noise"]) for r in rows]))
    for label, style, pts in curves:
        line, = ax.plot(*zip(*pts), style, label=label)
        for r, (b, e) in zip(rows, pts):
            ax.annotate(f"{r['logbeta']:+.1f}", (b, e), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line.get_color())
    for label, style, points in rd_series(report) if report else []:
        pts = [(b, e.get("rmse_over_noise")) for b, e, _ in points]
        pts = [(b, v) for b, v in pts if b is not None and v is not None and v > 0]  # lossless: not on a log axis
        if pts:
            ax.plot(*zip(*pts), style, label=label, markersize=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain numbers on the log axes; minor ticks are labelled only when an axis spans less than a
    # decade (the β-VAE curve alone often does), where matplotlib would otherwise print 2.7×10^0.
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_major_formatter(FormatStrFormatter("%.3g"))
        axis.set_minor_formatter(FormatStrFormatter("%.3g") if hi < 10 * lo else NullFormatter())
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel("RMSE / σ_noise")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("rate–distortion (labels: log10 β)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
