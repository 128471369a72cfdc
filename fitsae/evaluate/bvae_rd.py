"""Rate–distortion of a trained β-VAE across a grid of log β, on held-out tiles.

Contract: one row per log β (:func:`rate_distortion`). The **rate** is the posterior's KL to the
prior, in nats per image and bits per pixel: what bits-back / relative-entropy coding of a
posterior sample costs, a bound a practical codec approaches, not bytes on disk. The
**distortion** is that sample's reconstruction error, defined as for the tunable AE's rows of
``report.json`` (:class:`fitsae.evaluate.error_sums.ErrorSums`); ``mean_z`` holds the same for
the posterior mean (storing ``encode(x)`` as floats) and the variance decoder's calibration.
Sums are reduced over ranks once at the end, so every rank returns the same rows.

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

    Returns
    -------
    list of dict
        One row per log β, sorted by log β: ``logbeta``, ``beta``, ``rate_nats_per_image``,
        ``bits_per_pixel``, ``mse``, ``rmse_over_noise``, ``psnr``, ``mean_z`` (same errors from
        the posterior mean, plus the σ head's ``nll``, ``sigma_z_std``, ``coverage_1sigma``,
        ``coverage_2sigma`` there), ``n_images``.
    """
    import tensorflow as tf

    logbetas = sorted(float(v) for v in logbetas)
    if not logbetas:
        raise ValueError("rate_distortion needs at least one log β")

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
    return rows


def bvae_report(model, step: int, batches: Iterable[dict], logbetas: Sequence[float] | None = None,
                data_cfg=None, seed: int = 0) -> dict:
    """The β-VAE's evaluation of one checkpoint, as a JSON-ready dict.

    ``{"model": {...}, "rate_definition": ..., "results": [row per log β]}`` with the rows of
    :func:`rate_distortion`. ``fitsae evaluate`` calls this for ``kind: bvae`` runs instead of the
    per-η scoring of the tunable AEs.
    """
    logbetas = list(logbetas) if logbetas else default_logbetas(model)
    mc = model.model_config
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
        "units": "physical" if data_cfg is not None else "normalized",
        "results": rate_distortion(model, batches, logbetas, data_cfg=data_cfg, seed=seed),
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
    """The RD rows as a fixed-width table for the terminal."""
    lines = [f"{'log10 β':>8} {'rate nats/img':>14} {'bits/px':>9} {'mse':>11} {'rmse/σ':>8} {'rmse/σ (μ_z)':>13}"
             f" {'std z (μ_z)':>12} {'cov 1σ':>7}"]
    for r in report["results"]:
        lines.append(
            f"{r['logbeta']:>+8.2f} {r['rate_nats_per_image']:>14.3f} {r['bits_per_pixel']:>9.4f} "
            f"{r['mse']:>11.4g} {r['rmse_over_noise']:>8.4f} {r['mean_z']['rmse_over_noise']:>13.4f}"
            f" {r['mean_z']['sigma_z_std']:>12.3f} {r['mean_z']['coverage_1sigma']:>7.3f}"
        )
    return "\n".join(lines)


def plot_rate_distortion(rows: list[dict], path: str | Path, report: dict | None = None) -> Path:
    """RMSE/σ_noise against bits per pixel: the β-VAE curve, and the AE, PCA and fpack of ``report``.

    The β-VAE's rate is its KL (bits-back), the AE's and PCA's are their kept latent values at
    32 bits each (``bits_per_pixel`` of the report rows), fpack's its compressed heap: the honest
    rate of each method as it stands.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rows = sorted(rows, key=lambda r: r["logbeta"])
    bpp = [r["bits_per_pixel"] for r in rows]
    err = [r["rmse_over_noise"] for r in rows]
    ax.plot(bpp, err, "D-", label="β-VAE (KL rate, sampled z)")
    for r in rows:
        ax.annotate(f"{r['logbeta']:+.1f}", (r["bits_per_pixel"], r["rmse_over_noise"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    if report:
        results = sorted(report.get("results", []), key=lambda r: r.get("bits_per_pixel") or 0)
        for method, style in (("ae", "o-"), ("pca", "s--")):
            pts = [(r.get("bits_per_pixel"), (r.get(method) or {}).get("rmse_over_noise")) for r in results]
            pts = [p for p in pts if p[0] is not None and p[1] is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{method.upper()} (32-bit latents)")
        for ctype, marker in (("RICE_1", "^"), ("HCOMPRESS_1", "v")):
            # Lossless settings (error 0) have no place on the log error axis.
            entries = sorted((e for e in report.get("baselines", {}).get("fpack", [])
                              if e.get("compression_type") == ctype and not e.get("lossless")),
                             key=lambda e: e.get("bits_per_pixel") or 0)
            if entries:
                ax.plot([e["bits_per_pixel"] for e in entries], [e["rmse_over_noise"] for e in entries],
                        marker + ":", label=f"fpack {ctype}")
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
    ax.legend(fontsize=8)
    ax.set_title("rate–distortion (labels: log10 β)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
