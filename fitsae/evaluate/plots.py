"""Figures drawn from ``report.json`` alone (so ``--plot-only`` needs neither model nor data).

Figures are built as :class:`matplotlib.figure.Figure` objects and saved with the Agg renderer,
never through ``pyplot``: evaluation runs on cluster nodes without a display, where an
interactive backend would fail or hang, and a library must not switch the backend of a user's
notebook that imports it.

Figures (PNG, in the report's directory):

- ``error_vs_ratio.png``   RMSE/σ_noise and PSNR vs compression ratio, AE vs PCA;
- ``error_vs_bpp.png``     RMSE/σ_noise vs bits per pixel: AE and PCA (32-bit latents until the
  codec quantizes them) and every fpack setting;
- ``calibration.png``      histograms of z = (x − μ)/σ at three η against N(0, 1);
- ``examples.png``         input, μ, σ and residual of the first and the worst tile at three η
  (asinh stretch);
- ``pca_spectrum.png``     the PCA eigenvalue spectrum fitted on training data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

__all__ = ["draw_all", "draw_figure", "pick_etas"]


def pick_etas(etas: list[int], n: int = 3) -> list[int]:
    """Up to ``n`` η spread over the evaluated ones: smallest, middle, largest."""
    etas = sorted(set(etas))
    if len(etas) <= n:
        return etas
    idx = np.unique(np.round(np.linspace(0, len(etas) - 1, n)).astype(int))
    return [etas[i] for i in idx]


def _values(rows, *path):
    out = []
    for row in rows:
        v = row
        for key in path:
            v = (v or {}).get(key)
        out.append(np.nan if v is None else float(v))
    return np.array(out)


def _subplots(nrows=1, ncols=1, figsize=(6.5, 4.5), **kwargs):
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def _title(report: dict) -> str:
    model = report.get("model", {})
    step = model.get("checkpoint_step")
    kind = model.get("kind", "model")
    return f"{kind} AE" + (f", step {step}" if step is not None else "")


def _data_label(report: dict) -> str:
    """Which images a figure shows, e.g. ``test data/test (12 tiles of 16×16)``: a figure copied into
    a talk or a paper must still say whether it is the simulations or M13."""
    data = report.get("data", {})
    names = ["/".join(Path(str(p)).parts[-2:]) for p in data.get("paths") or []]
    shown = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
    tiles, shape = data.get("n_tiles"), data.get("eval_shape")
    size = f" of {shape[0]}×{shape[1]}" if shape else ""
    count = f" ({tiles} tiles{size})" if tiles else ""
    return f"test data {shown or '?'}{count}"


def _plain_log_ticks(axis) -> None:
    """Log axis labelled 0.5, 1, 2, 4, …: the default labels minor ticks as 3×10⁰, 4×10⁰, which
    overlap when the axis spans one to two decades (measured on bits per pixel from 2 to 64)."""
    axis.set_major_locator(LogLocator(base=2))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _error_vs_ratio(report: dict, path: Path) -> Figure:
    rows = sorted(report["results"], key=lambda r: r["compression_ratio"])
    ratio = _values(rows, "compression_ratio")
    fig, axes = _subplots(1, 2, figsize=(10, 4))
    methods = [("ae", "o-", "AE (budget η: best η′ ≤ η per tile)"), ("pca", "s--", "PCA")]
    if any("ae_fixed_mask" in r for r in rows):
        methods.insert(1, ("ae_fixed_mask", "x:", "AE, exactly η channels"))
    for method, style, label in methods:
        axes[0].plot(ratio, _values(rows, method, "rmse_over_noise"), style, label=label)
        axes[1].plot(ratio, _values(rows, method, "psnr"), style, label=label)
    axes[0].set_ylabel("RMSE / σ_noise")
    peak = report.get("data", {}).get("psnr_peak")
    axes[1].set_ylabel("PSNR [dB]" + (f" (peak {peak:.4g})" if peak else ""))
    for ax in axes:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
        ax.set_xlabel("compression ratio (pixels / kept latent values)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{_title(report)} vs PCA at equal kept values\n{_data_label(report)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def _error_vs_bpp(report: dict, path: Path) -> Figure:
    rows = sorted(report["results"], key=lambda r: r["compression_ratio"])
    fig, ax = _subplots(figsize=(6.5, 4.5))
    bpp = _values(rows, "bits_per_pixel")
    ax.plot(bpp, _values(rows, "ae", "rmse_over_noise"), "o-", label="AE (32-bit latents)")
    ax.plot(bpp, _values(rows, "pca", "rmse_over_noise"), "s--", label="PCA (32-bit coefficients)")
    fpack = report.get("baselines", {}).get("fpack", [])
    for ctype, marker in (("RICE_1", "^"), ("HCOMPRESS_1", "v")):
        entries = sorted((e for e in fpack if e.get("compression_type") == ctype),
                         key=lambda e: e.get("bits_per_pixel") or 0)
        if entries:
            ax.plot(_values(entries, "bits_per_pixel"), _values(entries, "rmse_over_noise"),
                    marker + ":", label=f"fpack {ctype}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("bits per pixel (fpack: compressed heap)")
    ax.set_ylabel("RMSE / σ_noise")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{_title(report)}, PCA and fpack\n{_data_label(report)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def _calibration(report: dict, path: Path) -> Figure:
    edges = np.asarray(report.get("calibration", {}).get("bin_edges", []), dtype=float)
    by_eta = {r["eta"]: r for r in report["results"]}
    fig, ax = _subplots(figsize=(6.5, 4.5))
    if len(edges) > 1:
        centers = 0.5 * (edges[1:] + edges[:-1])
        width = np.diff(edges)
        for eta in pick_etas(list(by_eta)):
            counts = np.asarray((by_eta[eta].get("ae") or {}).get("z_hist") or [], dtype=float)
            total = counts.sum()
            if total <= 0:
                continue
            # Drop the under/overflow bins for the density but keep them in the normalisation.
            density = counts[1:-1] / (total * width)
            std = by_eta[eta]["ae"].get("sigma_z_std")
            label = f"η={eta}" + (f" (std {std:.2f})" if std is not None else "")
            ax.step(centers, density, where="mid", label=label)
        grid = np.linspace(edges[0], edges[-1], 400)
        ax.plot(grid, np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi), "k--", label="N(0, 1)")
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-5)
    ax.set_xlabel("z = (x − μ) / σ")
    ax.set_ylabel("density")
    ax.set_title(f"σ calibration, {_title(report)}\n{_data_label(report)}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def _asinh(img: np.ndarray, scale: float) -> np.ndarray:
    return np.arcsinh(img / scale)


def _examples(report: dict, path: Path) -> Figure:
    examples = report.get("examples", {}).get("tiles", [])
    rows = [(t, e) for t in examples for e in t.get("etas", [])]
    if not rows:
        fig, ax = _subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no example tiles in report", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=90)
        return fig
    fig, axes = _subplots(len(rows), 4, figsize=(10, 2.6 * len(rows)), squeeze=False)
    for (tile, eta_entry), ax_row in zip(rows, axes):
        x = np.asarray(tile["input"], dtype=float)
        mu = np.asarray(eta_entry["mu"], dtype=float)
        sigma = np.asarray(eta_entry["sigma"], dtype=float)
        resid = np.asarray(eta_entry["residual"], dtype=float)
        # Stretch in units of the noise (≈1 in normalized units): faint structure near the noise
        # stays visible while bright sources do not saturate.
        noise = float(tile.get("noise") or 1.0)
        lo, hi = np.percentile(_asinh(x, noise), [1, 99.5])
        kept = eta_entry.get("eta_kept")
        label = f"μ, η={eta_entry['eta']}" + (f" (kept {kept})" if kept not in (None, eta_entry["eta"]) else "")
        for ax, img, title, kw in (
            (ax_row[0], _asinh(x, noise), f"input (tile {tile.get('tile_id')})", dict(vmin=lo, vmax=hi)),
            (ax_row[1], _asinh(mu, noise), label, dict(vmin=lo, vmax=hi)),
            (ax_row[2], sigma, "σ", dict(cmap="magma")),
            (ax_row[3], resid / noise, "residual / σ_noise", dict(cmap="RdBu_r", vmin=-3, vmax=3)),
        ):
            im = ax.imshow(img, origin="lower", interpolation="nearest", **({"cmap": "gray"} | kw))
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if tile.get("shown_as"):
            ax_row[0].set_ylabel(tile["shown_as"].replace(": ", ":\n", 1), fontsize=8)
    units = report.get("examples", {}).get("units", "")
    fig.suptitle(f"{_title(report)}: example tiles (asinh stretch{', ' + units if units else ''})\n"
                 f"{_data_label(report)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def _spectrum(report: dict, path: Path) -> Figure:
    values = np.asarray(report.get("pca", {}).get("eigenvalues") or [], dtype=float)
    fig, ax = _subplots(figsize=(6.5, 4.5))
    if values.size:
        k = np.arange(1, values.size + 1)
        ax.semilogy(k, np.clip(values, 1e-12, None), ".-")
        ax.set_xlabel("component")
        ax.set_ylabel("eigenvalue (normalized units²)")
    pca = report.get("pca", {})
    fitted = ", ".join("/".join(Path(str(p)).parts[-2:]) for p in (pca.get("paths") or [])[:2]) or "?"
    ax.set_title(f"PCA spectrum ({pca.get('dim', '?')}-dim vectors, {pca.get('n_vectors', '?')} training vectors)\n"
                 f"fitted on training data {fitted}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


_FIGURES = {
    "error_vs_ratio.png": _error_vs_ratio,
    "error_vs_bpp.png": _error_vs_bpp,
    "calibration.png": _calibration,
    "examples.png": _examples,
    "pca_spectrum.png": _spectrum,
}


def draw_figure(report: dict, name: str, out_dir: str | Path) -> Figure:
    """Draw figure ``name`` (e.g. ``"error_vs_bpp.png"``) of ``report`` into ``out_dir`` and return
    it, so what it shows (titles, tick labels) can be inspected."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _FIGURES[name](report, out / name)


def draw_all(report: dict, out_dir: str | Path) -> list[Path]:
    """Draw every figure of ``report`` into ``out_dir``; returns the written paths."""
    for name in _FIGURES:
        draw_figure(report, name, out_dir)
    return [Path(out_dir) / name for name in _FIGURES]
