"""``report.json``, its CSV twin and the AE-vs-PCA table printed at the end of an evaluation.

The report is the single source of truth of an evaluation: every plot is drawn from it alone
(``fitsae evaluate --plot-only DIR``), like CompressAI's JSON results that one plotting tool reads.
It is plain JSON; non-finite numbers (a PSNR of a perfect reconstruction, a metric with no pixels)
are written as ``null`` so that strict JSON readers (jq, JavaScript) accept the file.

Schema (DESIGN.md, keys required; more are added freely)::

    {"model": {...}, "data": {...},
     "results": [{"eta", "latent_values", "compression_ratio",
                  "ae": {"mse", "rmse_over_noise", "psnr", "sigma_z_std", "coverage_1sigma"},
                  "pca": {"mse", "rmse_over_noise", "psnr"}}, ...],
     "baselines": {"fpack": [...]}}
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

__all__ = [
    "REPORT_NAME",
    "CSV_NAME",
    "SCHEMA",
    "missing_keys",
    "write_report",
    "load_report",
    "format_table",
    "format_fpack_table",
    "format_bounded_table",
    "method_bits",
]

REPORT_NAME = "report.json"
CSV_NAME = "results.csv"

# The keys DESIGN.md promises; :func:`missing_keys` checks a report against them.
SCHEMA = {
    "top": ("model", "data", "results", "baselines"),
    "result": ("eta", "latent_values", "compression_ratio", "ae", "pca"),
    "ae": ("mse", "rmse_over_noise", "psnr", "sigma_z_std", "coverage_1sigma"),
    "pca": ("mse", "rmse_over_noise", "psnr"),
    "baselines": ("fpack",),
}

_CSV_COLUMNS = (
    "method", "eta", "setting", "latent_values", "compression_ratio", "bits_per_pixel",
    "bits_per_pixel_with_headers", "mse",
    "rmse_over_noise", "psnr", "nll", "sigma_z_std", "coverage_1sigma", "coverage_2sigma",
    "sigma_z_std_physical", "coverage_1sigma_physical", "coverage_2sigma_physical", "mean_eta_kept",
    "mean_error_over_noise", "max_abs_error_over_noise", "median_abs_error_over_noise", "p99_abs_error_over_noise",
    "rmse_over_noise_truth", "mean_error_over_noise_truth", "max_abs_error_over_noise_truth",
    "median_abs_error_over_noise_truth", "p99_abs_error_over_noise_truth",
)
# Columns filled from the method's own entry (the rest come from the row or the setting).
_METRIC_COLUMNS = _CSV_COLUMNS[7:]


def missing_keys(report: dict) -> list[str]:
    """Schema keys absent from ``report`` (empty when it is complete), as dotted paths."""
    missing = [k for k in SCHEMA["top"] if k not in report]
    for i, row in enumerate(report.get("results", [])):
        missing += [f"results[{i}].{k}" for k in SCHEMA["result"] if k not in row]
        for part in ("ae", "pca"):
            missing += [f"results[{i}].{part}.{k}" for k in SCHEMA[part] if k not in row.get(part, {})]
    if "baselines" in report:
        missing += [f"baselines.{k}" for k in SCHEMA["baselines"] if k not in report["baselines"]]
    return missing


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def method_bits(row: dict, method: str) -> float | None:
    """Bits per pixel of ``method`` (``ae``, ``ae_fixed_mask``, ``pca``) in a result row: its coded
    bits when the codec measured them, else the bits it stores, else the row's (32-bit values)."""
    entry = row.get(method) or {}
    for key in ("bits_per_pixel_coded", "bits_per_pixel_stored"):
        if entry.get(key) is not None:
            return entry[key]
    return row.get("bits_per_pixel")


def _csv_rows(report: dict):
    for row in report.get("results", []):
        for method in ("ae", "ae_fixed_mask", "pca"):
            if method not in row:
                continue
            m = row[method] or {}
            yield {
                "method": method, "eta": row["eta"], "setting": "",
                "latent_values": row["latent_values"],
                "compression_ratio": m.get("compression_ratio", row["compression_ratio"]),
                "bits_per_pixel": method_bits(row, method),
                **{k: m.get(k) for k in _METRIC_COLUMNS},
            }
    baselines = report.get("baselines", {})
    for family in ("fpack", "jpegxl"):
        for entry in baselines.get(family) or []:
            yield {
                "method": family, "eta": "", "setting": entry.get("label", ""), "latent_values": "",
                "compression_ratio": entry.get("compression_ratio"),
                "bits_per_pixel": entry.get("bits_per_pixel"),
                "bits_per_pixel_with_headers": entry.get("bits_per_pixel_with_headers"),
                **{k: entry.get(k) for k in _METRIC_COLUMNS},
            }
    for entry in report.get("bounded") or []:
        yield {"method": f"bounded {entry['codec']}", "eta": "", "setting": entry.get("label", ""),
               "latent_values": "", "compression_ratio": "", "bits_per_pixel": entry.get("bits_per_pixel"),
               "rmse_over_noise": entry.get("rmse_over_noise"),
               "mean_error_over_noise": entry.get("mean_bias_over_noise")}


def write_report(report: dict, out_dir: str | Path) -> Path:
    """Write ``report.json`` and ``results.csv`` into ``out_dir`` (created); returns the JSON path.

    The JSON is written to a temporary name and renamed, so a reader (``--watch`` plots, a
    dashboard) never sees half a file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite_or_none(report), indent=1, allow_nan=False) + "\n")
    try:
        tmp.replace(path)
    except OSError as err:  # named by the file the user asked for, not the temporary one
        tmp.unlink(missing_ok=True)
        raise type(err)(err.errno, err.strerror, str(path)) from err
    with open(out / CSV_NAME, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in _csv_rows(report):
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def load_report(path: str | Path) -> dict:
    """Read a report from ``report.json`` or the directory holding it; clear error otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_NAME
    try:
        text = path.read_text()
    except OSError as err:
        raise FileNotFoundError(f"no evaluation report at {path}: {err.strerror or err}") from err
    try:
        report = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    missing = missing_keys(report)
    if missing:
        raise ValueError(f"{path} lacks report keys: {', '.join(missing[:10])}")
    return report


def _finite(value) -> bool:
    """A number to show: written reports hold null where memory holds NaN."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _input_line(report: dict) -> str:
    data = report.get("data", {})
    bitpix = data.get("input_bitpix")
    if not bitpix:
        return "ratio = input bits ÷ stored bits"
    return (f"input BITPIX {', '.join(str(b) for b in bitpix)} ({_num(data.get('input_bits_per_pixel'), 'g')} "
            f"bits/pixel); ratio = input bits ÷ stored bits")


def format_table(report: dict) -> str:
    """The model-vs-PCA table: one line per η, errors in units of the noise, and who wins.

    The model's result is the plain mask (exactly η channels, ``ae_fixed_mask``); the codec's
    budget choice (``ae``) is a coding decision on top of it and is shown beside, labelled so.
    """
    peak = report.get("data", {}).get("psnr_peak")
    rows = report.get("results", [])
    truth = any(_finite((r.get("ae_fixed_mask") or {}).get("rmse_over_noise_truth")) for r in rows)
    lines = [
        f"AE vs PCA at equal kept values per tile, the model first (RMSE in units of σ_noise; PSNR peak = "
        f"{_num(peak, '.4g')}, the physical data range); {_input_line(report)}",
        "model = the plain mask, exactly η latent channels (ae_fixed_mask): the AE's own result; "
        "codec = the budget `fitsae compress` uses, each tile keeps its best η′ ≤ η channels (ae; η′ = their mean)",
        "bpp = bits per pixel the entropy coder really wrote; med, p99: median and 99th percentile of |x̂ − x|/σ"
        + ("; truth: rmse/σ against the noiseless truth" if truth else "")
        + "; σ_z std, cov1σ: the codec's σ calibration (std of (x − μ)/σ, share within 1σ), in the "
        "normalized space and (phys) with σ in physical units as `fitsae decompress --sigma` writes it",
        f"{'eta':>5} {'model bpp':>9} {'model rmse/σ':>12} {'med':>6} {'p99':>6} {'PCA bpp':>8} {'PCA rmse/σ':>11} "
        + (f"{'model truth':>11} {'PCA truth':>10} " if truth else "")
        + f"{'model PSNR':>10} {'PCA PSNR':>9}  {'winner':<6} | {'codec bpp':>9} {'codec rmse/σ':>12} {'η′':>5} "
        f"{'σ_z std':>8} {'cov1σ':>6} {'σ_z phys':>8} {'cov1σ phys':>10}",
    ]
    for row in rows:
        ae, pca, plain = row.get("ae") or {}, row.get("pca") or {}, row.get("ae_fixed_mask") or {}
        m, p = plain.get("rmse_over_noise"), pca.get("rmse_over_noise")
        winner = "—" if m is None or p is None else ("model" if m < p else "PCA" if p < m else "tie")
        truth_columns = (f"{_num(plain.get('rmse_over_noise_truth'), '.4f'):>11} "
                         f"{_num(pca.get('rmse_over_noise_truth'), '.4f'):>10} ") if truth else ""
        lines.append(
            f"{row['eta']:>5} {_num(plain.get('bits_per_pixel_coded'), '.3f'):>9} {_num(m, '.4f'):>12} "
            f"{_num(plain.get('median_abs_error_over_noise'), '.3f'):>6} "
            f"{_num(plain.get('p99_abs_error_over_noise'), '.3f'):>6} "
            f"{_num(pca.get('bits_per_pixel_coded'), '.3f'):>8} {_num(p, '.4f'):>11} {truth_columns}"
            f"{_num(plain.get('psnr'), '.2f'):>10} {_num(pca.get('psnr'), '.2f'):>9}  {winner:<6} | "
            f"{_num(ae.get('bits_per_pixel_coded'), '.3f'):>9} {_num(ae.get('rmse_over_noise'), '.4f'):>12} "
            f"{_num(ae.get('mean_eta_kept'), '.2f'):>5} {_num(ae.get('sigma_z_std'), '.3f'):>8} "
            f"{_num(ae.get('coverage_1sigma'), '.3f'):>6} {_num(ae.get('sigma_z_std_physical'), '.3f'):>8} "
            f"{_num(ae.get('coverage_1sigma_physical'), '.3f'):>10}"
        )
    lines += _monotonic_lines(report)
    lines += _band_lines(report)
    lines += _photometry_lines(report)
    return "\n".join(lines)


def _photometry_lines(report: dict) -> list[str]:
    """Median relative aperture-flux error per η of the model, the codec and PCA (in percent),
    against the original and, where the data had a truth, against the truth with the floor."""
    rows = report.get("results", [])

    def flux(row, method, key="photometry"):
        return ((row.get(method) or {}).get(key) or {})

    first = flux(rows[0], "ae_fixed_mask") if rows else {}
    if not first.get("n_used"):
        return []
    truth = bool(flux(rows[0], "ae_fixed_mask", "photometry_truth").get("n_used"))
    keys = ("photometry", "photometry_truth") if truth else ("photometry",)
    lines = [f"Aperture photometry: median |ΔF|/F (%) of the {first['n_used']} sources with SNR ≥ "
             f"{first['snr_min']:g} on the original ({first['n_sources']} with whole apertures), "
             "the same apertures measured on each reconstruction" + (
                 ", against the original's fluxes and (vs truth) the noiseless truth's" if truth else ""),
             f"{'eta':>5} " + " ".join(f"{m + (' truth' if k != 'photometry' else ''):>11}"
                                       for k in keys for m in ("model", "codec", "PCA"))
             + f" {'codec 95 % interval':>21}"]
    for row in rows:
        values = [flux(row, m, k).get("median_abs_relative_flux_error") for k in keys
                  for m in ("ae_fixed_mask", "ae", "pca")]
        interval = flux(row, "ae").get("median_abs_relative_flux_error_ci95")
        span = "–".join(_num(100 * v, ".3f") for v in interval) if interval else "—"
        lines.append(f"{row['eta']:>5} " + " ".join(
            f"{_num(None if v is None else 100 * v, '.3f'):>11}" for v in values) + f" {span:>21}")
    ref = report.get("photometry_reference")
    if ref:
        floor = ref["truth_vs_original"]["median_abs_relative_flux_error"]
        noisy = ref["original_vs_truth"]["median_abs_relative_flux_error"]
        lines.append(f"floor: the noiseless truth scores {_num(100 * floor, '.3f')} against the original (a perfect "
                     f"denoiser differs by the noise in the apertures); the original scores "
                     f"{_num(100 * noisy, '.3f')} against the truth")
    return lines


def _band_label(lo, hi) -> str:
    if lo is None:
        return f"< {hi:g}σ"
    return f"≥ {lo:g}σ" if hi is None else f"{lo:g}–{hi:g}σ"


def _largest_rise(band: dict) -> str:
    """The band's largest rise from one η to the next, relative to the lower value ("none")."""
    rel = [rise["relative_increase"] for rise in band.get("rises", [])]
    return f"+{100 * max(rel):.1f}%" if rel else "none"


def _band_lines(report: dict) -> list[str]:
    """AE rmse/σ within each brightness band at every η: where the error lives, and whether each
    band's error falls with η."""
    trend = report.get("ae_error_by_band") or []
    rows = report.get("results", [])
    if not trend or not rows:
        return []
    lines = ["AE rmse/σ by brightness of the true pixel, (x − background)/σ_noise "
             "(share = part of the squared error at the largest η)",
             f"{'band':>11} {'pixels':>8} {'share':>6}  " + " ".join(f"{'η=' + str(r['eta']):>6}" for r in rows)
             + "  largest rise"]
    for i, band in enumerate(trend):
        values = " ".join(f"{_num(r['ae']['bands'][i]['rmse_over_noise'], '.3f'):>6}" for r in rows)
        lines.append(f"{_band_label(band['snr_low'], band['snr_high']):>11} "
                     f"{_num(100 * band['pixel_fraction'], '.3f'):>7}% {_num(100 * band['share_of_error'], '.0f'):>5}%  "
                     f"{values}  {_largest_rise(band)}")
    if any(r["ae"]["bands"][i].get("rmse_over_noise_truth") is not None for r in rows for i in range(len(trend))):
        lines.append("the same bands, AE rmse/σ against the noiseless truth")
        for i, band in enumerate(trend):
            values = " ".join(f"{_num(r['ae']['bands'][i].get('rmse_over_noise_truth'), '.3f'):>6}" for r in rows)
            lines.append(f"{_band_label(band['snr_low'], band['snr_high']):>11} {'':>8} {'':>6}  {values}")
    if any(r["ae"]["bands"][i].get("sigma_z_std_physical") is not None for r in rows for i in range(len(trend))):
        lines.append("the same bands, AE std of (x − μ)/σ, physical units (1: σ calibrated in the band)")
        for i, band in enumerate(trend):
            values = " ".join(f"{_num(r['ae']['bands'][i].get('sigma_z_std_physical'), '.3f'):>6}" for r in rows)
            lines.append(f"{_band_label(band['snr_low'], band['snr_high']):>11} {'':>8} {'':>6}  {values}")
    return lines


def _monotonic_lines(report: dict) -> list[str]:
    """Whether the AE error falls with η, and for each rise whether it exceeds the tile scatter."""
    if "ae_error_nonincreasing_in_eta" not in report:
        return []
    lines = []
    plain = report.get("ae_fixed_mask_increases") or []
    if plain:
        steps = ", ".join(f"{r['from_eta']}→{r['to_eta']} (+{100 * r['relative_increase']:.1f}%)" for r in plain)
        lines.append(f"The model's error (plain mask, exactly η channels) rises at η {steps}; "
                     "the codec's budget keeps fewer channels where they reconstruct better.")
    if report["ae_error_nonincreasing_in_eta"]:
        return lines + ["AE error does not increase with η."]
    for rise in report.get("ae_error_increases", []):
        change, se = rise.get("mean_tile_change"), rise.get("standard_error")
        verdict = "significant" if rise.get("significant") else "within the tile-to-tile scatter"
        lines.append(f"AE error rises from η={rise['from_eta']} to η={rise['to_eta']} by "
                     f"{_num(rise['increase'], '.4f')} rmse/σ (per-tile change of mse/σ² "
                     f"{_num(change, '.4f')} ± {_num(se, '.4f')} SE over {rise.get('n_tiles', '—')} tiles): {verdict}")
    return lines


def format_fpack_table(report: dict) -> str:
    """The classical baselines (fpack, JPEG-XL) on the same tiles: bits per pixel (payload, whole
    file), ratio, and errors against the input and, where known, the truth."""
    baselines = report.get("baselines", {})
    entries = [e for family in ("fpack", "jpegxl") for e in baselines.get(family) or []]
    if not entries:
        return "fpack / JPEG-XL baselines: not run"
    truth = any(_finite(e.get("rmse_over_noise_truth")) for e in entries)
    lines = [
        "fpack (astropy CompImageHDU, 256×256 tiles, SUBTRACTIVE_DITHER_1) and JPEG-XL (lossless, on RICE_1's "
        "integers) on the same tiles",
        "bits/px: payload (heap, JPEG-XL data); +hdr: the whole file as written; "
        f"{_input_line(report)}; bias = mean(x̂ − x)/σ; max = max|x̂ − x|/σ",
        f"{'setting':<22} {'bits/px':>8} {'+hdr':>7} {'ratio':>7} {'rmse/σ':>8} "
        + (f"{'truth':>7} " if truth else "") + f"{'bias':>7} {'max':>7} {'med':>6} {'p99':>6} {'PSNR':>7}",
    ]
    for e in entries:
        lines.append(
            f"{e['label']:<22} {_num(e.get('bits_per_pixel'), '.3f'):>8} "
            f"{_num(e.get('bits_per_pixel_with_headers'), '.3f'):>7} "
            f"{_num(e.get('compression_ratio'), '.2f'):>7} {_num(e.get('rmse_over_noise'), '.4f'):>8} "
            + (f"{_num(e.get('rmse_over_noise_truth'), '.4f'):>7} " if truth else "")
            + f"{_num(e.get('mean_error_over_noise'), '+.4f'):>7} {_num(e.get('max_abs_error_over_noise'), '.3f'):>7} "
            f"{_num(e.get('median_abs_error_over_noise'), '.3f'):>6} {_num(e.get('p99_abs_error_over_noise'), '.3f'):>6} "
            f"{_num(e.get('psnr'), '.2f'):>7}"
        )
    return "\n".join(lines)


def format_bounded_table(report: dict) -> str:
    """The error-bounded modes (``report["bounded"]``, :mod:`fitsae.evaluate.bounded`): per quantize
    level, fitsae beside RICE_1 and JPEG-XL on the same planes; empty when they were not scored."""
    rows = report.get("bounded") or []
    if not rows:
        return ""
    lines = [
        "error-bounded modes (compress --quantize-level q: step Δ = σ_noise/q; lossless: integer planes) on whole "
        "planes, beside RICE_1 and JPEG-XL (lossless, on RICE_1's dithered integers) at the same q",
        "bits/px: payload (coded data, headers excluded); ℓ∞/Δ: max |x̂ − x| over each tile's step; "
        "bias: mean(x̂ − x)/σ ± its standard error; Δ/σ: median step over σ_noise (each codec estimates σ itself)",
        f"{'q':>8} {'codec':<8} {'bits/px':>8} {'× RICE':>7} {'rmse/σ':>8} {'ℓ∞/Δ':>7} {'bias':>8} {'± SE':>7} "
        f"{'Δ/σ':>7}",
    ]
    rice = {r["quantize_level"]: r.get("bits_per_pixel") for r in rows if r["codec"] == "RICE_1"}
    for r in rows:
        level = r["quantize_level"]
        base = rice.get(level)
        bits = r.get("bits_per_pixel")
        relative = bits / base if _finite(bits) and _finite(base) and base > 0 else None
        lines.append(
            f"{'lossless' if level is None else format(level, 'g'):>8} {r['codec']:<8} {_num(bits, '.3f'):>8} "
            f"{_num(relative, '.3f'):>7} {_num(r.get('rmse_over_noise'), '.4f'):>8} "
            f"{_num(r.get('linf_over_delta'), '.3f'):>7} {_num(r.get('mean_bias_over_noise'), '+.4f'):>8} "
            f"{_num(r.get('mean_bias_standard_error_over_noise'), '.4f'):>7} "
            f"{_num(r.get('median_step_over_noise'), '.3f'):>7}"
        )
    return "\n".join(lines)
