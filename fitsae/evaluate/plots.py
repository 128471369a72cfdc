"""Figures drawn from ``report.json`` alone (so ``--plot-only`` needs neither model nor data).

Contract: :func:`draw_all` writes ``error_vs_ratio.png``, ``error_vs_bpp.png``,
``calibration.png``, ``examples.png`` and ``pca_spectrum.png`` into the report's directory
(each drawing function says what its figure shows); every title names the data it shows.
Figures are :class:`matplotlib.figure.Figure` objects saved with the Agg renderer, never
through ``pyplot``.

Why not pyplot: evaluation runs on cluster nodes without a display, where an interactive
backend would fail or hang, and a library must not switch the backend of a user's notebook.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fitsae.evaluate.report import method_bits

__all__ = ["draw_all", "draw_figure", "pick_etas", "rd_series"]


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


def _finite(value) -> bool:
    """A number that can be drawn: the report writes missing values as null, memory holds NaN."""
    return isinstance(value, (int, float)) and math.isfinite(value)


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
    """RMSE/σ_noise and PSNR vs compression ratio (input bits ÷ stored bits): AE, plain mask, PCA."""
    rows = sorted(report["results"], key=lambda r: r["compression_ratio"])
    fig, axes = _subplots(1, 2, figsize=(10, 4))
    methods = [("ae", "o-", "AE (budget η: best η′ ≤ η per tile)"), ("pca", "s--", "PCA")]
    if any("ae_fixed_mask" in r for r in rows):
        methods.insert(1, ("ae_fixed_mask", "x:", "AE, plain mask (exactly η channels)"))
    for method, style, label in methods:
        ratio = np.array([(r.get(method) or {}).get("compression_ratio", r["compression_ratio"]) for r in rows],
                         dtype=float)
        axes[0].plot(ratio, _values(rows, method, "rmse_over_noise"), style, label=label)
        axes[1].plot(ratio, _values(rows, method, "psnr"), style, label=label)
    axes[0].set_ylabel("RMSE / σ_noise")
    peak = report.get("data", {}).get("psnr_peak")
    axes[1].set_ylabel("PSNR [dB]" + (f" (peak {peak:.4g})" if peak else ""))
    for ax in axes:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
        ax.set_xlabel("compression ratio (input bits ÷ stored bits)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{_title(report)} vs PCA at equal kept values\n{_data_label(report)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def rd_series(report: dict) -> list[tuple[str, str, list[tuple[float, dict, str]]]]:
    """Every method of ``report`` as (legend label, line style, [(bits per pixel, entry, point label)])."""
    rows = report["results"]
    coded = any((r.get("ae") or {}).get("bits_per_pixel_coded") is not None for r in rows)
    pca_coded = any((r.get("pca") or {}).get("bits_per_pixel_coded") is not None for r in rows)
    shown = set(pick_etas([r["eta"] for r in rows]))
    series = []
    for method, style, label in (("ae", "o-", "AE, budget η (" + ("coded bits" if coded else "32-bit latents") + ")"),
                                 ("ae_fixed_mask", "x:", "AE, plain mask (exactly η channels)"),
                                 ("pca", "s--", "PCA (" + ("coded coefficients" if pca_coded else "32-bit coefficients") + ")")):
        points = [(method_bits(r, method), r[method], f"η={r['eta']}" if r["eta"] in shown else "")
                  for r in rows if r.get(method)]
        if points:
            series.append((label, style, points))
    baselines = report.get("baselines", {})
    entries = [e for family in ("fpack", "jpegxl") for e in baselines.get(family) or []]
    groups = (("RICE_1", False, "^:", "fpack RICE_1"), ("HCOMPRESS_1", False, "v:", "fpack HCOMPRESS_1"),
              ("JPEG_XL", False, "D:", "JPEG-XL on RICE_1's integers"), ("RICE_1", True, "P", "RICE_1 lossless"),
              ("JPEG_XL", True, "*", "JPEG-XL lossless"))
    for ctype, lossless, style, label in groups:
        members = [e for e in entries if e.get("compression_type") == ctype and bool(e.get("lossless")) == lossless]
        points = sorted(((e.get("bits_per_pixel"), e, _setting_tag(e)) for e in members),
                        key=lambda p: np.inf if p[0] is None else p[0])
        if points:
            series.append((label, style, points))
    for codec, lossless, style, label in (("fitsae", False, "o-", "fitsae error-bounded, q = σ/Δ (whole planes)"),
                                          ("RICE_1", False, "^-", "RICE_1 at the same q (whole planes)"),
                                          ("JPEG_XL", False, "D-", "JPEG-XL on those integers (whole planes)"),
                                          ("fitsae", True, "o", "fitsae lossless"),
                                          ("RICE_1", True, "^", "RICE_1 lossless (whole planes)"),
                                          ("JPEG_XL", True, "D", "JPEG-XL lossless (whole planes)")):
        members = [e for e in report.get("bounded") or [] if e["codec"] == codec and bool(e["lossless"]) == lossless]
        points = sorted(((e.get("bits_per_pixel"), e, _setting_tag(e)) for e in members),
                        key=lambda p: np.inf if p[0] is None else p[0])
        if points:
            series.append((label, style, points))
    return series


def _setting_tag(entry: dict) -> str:
    """``q=4``, ``s=2.5`` or ``lossless``: the part of a baseline's label that varies along its curve."""
    label = entry.get("label", "")
    return label.rsplit(" ", 1)[-1] if " " in label else label


def _error_vs_bpp(report: dict, path: Path) -> Figure:
    """The rate–distortion plot with everything: RMSE/σ_noise vs bits per pixel for the AE (its
    coded bits when the codec measured them, else the bits it stores), the plain mask, PCA, every
    fpack setting and JPEG-XL, each point labelled with its η or setting; against the noisy
    input and, in a second panel, against the noiseless truth when the data have one."""
    series = rd_series(report)
    truth = any(_finite(entry.get("rmse_over_noise_truth")) for _, _, pts in series for _, entry, _ in pts)
    panels = [("rmse_over_noise", "RMSE / σ_noise against the noisy input")]
    if truth:
        panels.append(("rmse_over_noise_truth", "RMSE / σ_noise against the noiseless truth"))
    fig, axes = _subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), squeeze=False)
    for ax, (key, ylabel) in zip(axes[0], panels):
        for label, style, points in series:
            bits = np.array([np.nan if b is None else float(b) for b, _, _ in points])
            error = np.array([np.nan if e.get(key) is None else float(e[key]) for _, e, _ in points])
            if np.all(error == 0.0):  # lossless: no place on a log error axis, a line at its rate
                color = "gray" if "RICE" in label else "tab:red" if "fitsae" in label else "black"
                for b in bits[np.isfinite(bits)]:
                    ax.axvline(b, linestyle="--", linewidth=1, color=color, label=f"{label} (exact): {b:.2f} bits/px")
                continue
            if not np.any(np.isfinite(error)):  # e.g. the error-bounded rows have no truth to compare with
                continue
            line, = ax.plot(bits, error, style, label=label, markersize=5)
            for b, err, (_, _, tag) in zip(bits, error, points):
                if tag and np.isfinite(b) and np.isfinite(err) and err > 0:
                    ax.annotate(tag, (b, err), textcoords="offset points", xytext=(3, 3), fontsize=6,
                                color=line.get_color())
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Plain numbers: bits at 1, 2, 5 × 10ⁿ (a decade or two), errors at every n × 10ⁿ (often less).
        for axis, subs in ((ax.xaxis, (1.0, 2.0, 5.0)), (ax.yaxis, tuple(range(1, 10)))):
            axis.set_major_locator(LogLocator(base=10, subs=subs))
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("bits per pixel (payload: coded data, headers excluded)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    bounded = " (+ error-bounded modes on whole planes)" if report.get("bounded") else ""
    fig.suptitle(f"Rate–distortion: {_title(report)}, PCA, fpack and JPEG-XL on the same tiles{bounded}\n"
                 f"{_data_label(report)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig


def _calibration(report: dict, path: Path) -> Figure:
    """Histograms of z = (x − μ)/σ at three η against N(0, 1)."""
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
    """Input, μ, σ and residual of the first and the worst tile at three η (asinh stretch)."""
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
    """The PCA eigenvalue spectrum fitted on training data."""
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
