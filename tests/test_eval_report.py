"""report.json / CSV writing, schema check, table, and ``--plot-only`` without model or data."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fitsae.cli import evaluate as cli
from fitsae.evaluate import baselines
from fitsae.evaluate.calibration import Z_BIN_EDGES
from fitsae.evaluate.metrics import MetricBook
from fitsae.evaluate.pca import StreamingPCA, from_patches, to_patches
from fitsae.evaluate.report import format_table, load_report, missing_keys, write_report


def _report_from_real_sums(tmp_path: Path) -> dict:
    """A schema-complete report whose numbers come from real PCA/fpack/JPEG-XL runs on random fields.

    The "AE" rows are PCA reconstructions with a constant σ: enough to exercise every field the
    plots and tables read, without TensorFlow. The fields' noiseless part is their truth.
    """
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    truth = np.stack([
        5 * np.exp(-((xx - rng.uniform(4, 12)) ** 2 + (yy - rng.uniform(4, 12)) ** 2) / 6.0)
        for _ in range(40)
    ])[..., None]
    tiles = truth + rng.normal(size=truth.shape)
    pca = StreamingPCA(16)
    pca.update(to_patches(tiles[:30], (4, 4)))
    pca.reduce()
    fit = pca.fit()
    test, test_truth = tiles[30:], truth[30:]
    book = MetricBook()
    noise = np.ones(len(test))
    results = []
    for eta in (1, 2, 4, 8):
        rec = from_patches(fit.reconstruct(to_patches(test, (4, 4)), eta), (16, 16), (4, 4))[..., None]
        book.gaussian(("ae", eta)).update(test, rec, np.zeros_like(test), test, rec, noise, test_truth)
        book.errors(("pca", eta)).update(test, rec, noise, test_truth)
    book.reduce()
    peak = float(test.max() - test.min())
    for eta in (1, 2, 4, 8):
        results.append({"eta": eta, "latent_values": eta * 16, "compression_ratio": 256 / (eta * 16),
                        "bits_per_pixel": 32 * eta * 16 / 256,
                        "ae": book[("ae", eta)].summary(peak), "pca": book[("pca", eta)].summary(peak)})
    classical = {"fpack": [], "jpegxl": []}
    for setting in (baselines.Setting("RICE_1", 0.5), baselines.Setting("RICE_1", 1.0),
                    baselines.Setting("HCOMPRESS_1", 4.0, 2.5), baselines.Setting("JPEG_XL", 1.0)):
        entry = MetricBook().codec(setting)
        for tile, tile_truth in zip(test[..., 0], test_truth[..., 0], strict=True):
            out = baselines.roundtrip(tile, setting)
            entry.update(tile[None], out.decoded[None], [1.0], tile_truth[None])
            entry.add_bytes(out.payload_bytes, out.table_bytes, out.file_bytes, 32 * tile.size)
        classical[setting.family].append({**setting.as_dict(), **entry.summary(peak)})
    x = test[0, ..., 0]
    return {
        "model": {"kind": "conv", "checkpoint_step": 7},
        "data": {"psnr_peak": peak},
        "results": results,
        "baselines": classical,
        "pca": {"eigenvalues": fit.eigenvalues.tolist(), "dim": 16, "n_vectors": fit.n},
        "calibration": {"bin_edges": Z_BIN_EDGES.tolist()},
        "examples": {"units": "normalized", "tiles": [{
            "tile_id": 0, "noise": 1.0, "input": x.tolist(),
            "etas": [{"eta": 1, "mu": x.tolist(), "sigma": np.ones_like(x).tolist(),
                      "residual": np.zeros_like(x).tolist()}]}]},
    }


def test_report_round_trip_csv_and_schema(tmp_path: Path):
    report = _report_from_real_sums(tmp_path)
    report["results"][0]["ae"]["psnr"] = math.inf  # a perfect reconstruction must stay valid JSON
    path = write_report(report, tmp_path / "eval")
    text = path.read_text()
    json.loads(text)  # strict JSON: no NaN/Infinity tokens
    assert "Infinity" not in text and "NaN" not in text
    loaded = load_report(tmp_path / "eval")
    assert missing_keys(loaded) == []
    assert loaded["results"][0]["ae"]["psnr"] is None
    with open(tmp_path / "eval" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == {"ae", "pca", "fpack", "jpegxl"}
    assert len(rows) == 2 * len(report["results"]) + 4
    jpegxl = next(r for r in rows if r["method"] == "jpegxl")
    assert jpegxl["setting"] == "JPEG-XL q=1" and float(jpegxl["rmse_over_noise_truth"]) > 0
    table = format_table(loaded)
    assert "winner" in table and len(table.splitlines()) == 4 + len(report["results"])

    del loaded["results"][1]["pca"]["psnr"]
    assert missing_keys(loaded) == ["results[1].pca.psnr"]


def test_the_table_shows_the_sigma_calibration_in_normalized_and_physical_units():
    """Both σ_z columns are read from the codec's row: the physical one is not a copy."""
    ae = {"sigma_z_std": 1.234, "coverage_1sigma": 0.611, "sigma_z_std_physical": 2.468,
          "coverage_1sigma_physical": 0.422}
    header, row = format_table({"results": [{"eta": 4, "ae": ae}]}).splitlines()[3:5]
    assert header.split()[-5:] == ["cov1σ", "σ_z", "phys", "cov1σ", "phys"]
    assert row.split()[-4:] == ["1.234", "0.611", "2.468", "0.422"]


def test_load_report_errors_are_clear(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no evaluation report"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(ValueError, match="lacks report keys: data"):
        load_report(tmp_path)


def test_plot_only_redraws_every_figure_from_report_alone(tmp_path: Path):
    out = tmp_path / "copied"
    write_report(_report_from_real_sums(tmp_path), out)
    # A fresh interpreter with no network and no run directory: only report.json is there.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("http", "HTTP", "OMPI_", "PMIX_"))}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="")
    code = (
        "import sys; from fitsae.cli import main; rc = main(['evaluate', '--plot-only', sys.argv[1]]);"
        "assert 'tensorflow' not in sys.modules, 'plot-only must not load TensorFlow'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("error_vs_ratio.png", "error_vs_bpp.png", "calibration.png", "examples.png", "pca_spectrum.png"):
        png = out / name
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "AE vs PCA" in proc.stdout and "RICE_1 q=1" in proc.stdout


def test_plot_only_without_report_exits_2(tmp_path: Path, capsys):
    assert cli.main(["--plot-only", str(tmp_path)]) == 2
    assert "no evaluation report" in capsys.readouterr().err


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys):
    assert cli.main(["--run-dir", str(tmp_path)]) == 2
    assert "--data are required" in capsys.readouterr().err
    assert cli.main(["--run-dir", str(tmp_path), "--data", "x.fits", "--checkpoint", "newest"]) == 2
    assert "--checkpoint must be" in capsys.readouterr().err


def _rows_and_book(errors_by_eta: dict[int, np.ndarray]):
    """Report rows and a book of paired changes for per-tile errors given directly (σ = 1, 1 pixel)."""
    from fitsae.evaluate.error_sums import tile_error_over_noise

    etas = sorted(errors_by_eta)
    book = MetricBook()
    zeros = np.zeros((len(errors_by_eta[etas[0]]), 1, 1, 1))
    tile_err = {eta: tile_error_over_noise(zeros, np.sqrt(e)[:, None, None, None], np.ones(len(e)))
                for eta, e in errors_by_eta.items()}
    for a, b in zip(etas, etas[1:]):
        book.paired(("ae_change", a, b)).update(tile_err[a], tile_err[b])
    rows = [{"eta": eta, "ae": {"rmse_over_noise": float(np.sqrt(np.mean(tile_err[eta])))}} for eta in etas]
    return rows, book


def test_a_rise_from_one_tile_is_within_the_scatter_a_rise_on_every_tile_is_significant():
    from fitsae.evaluate.assembly import monotonic_note

    rng = np.random.default_rng(1)
    base = rng.uniform(1.0, 3.0, size=20)
    one_tile = base - 0.01
    one_tile[3] += 1.0  # one bright galaxy reconstructed worse: the pooled error rises
    rows, book = _rows_and_book({1: base * 1.5, 2: base, 3: one_tile})
    note = monotonic_note(rows, book)
    assert not note["ae_error_nonincreasing_in_eta"]
    (rise,) = note["ae_error_increases"]
    assert (rise["from_eta"], rise["to_eta"], rise["n_tiles"]) == (2, 3, 20) and rise["increase"] > 0
    assert not rise["significant"] and not note["ae_error_increase_significant"]

    rows, book = _rows_and_book({1: base * 1.5, 2: base, 3: base + 0.05 + rng.normal(scale=0.01, size=20)})
    note = monotonic_note(rows, book)
    assert note["ae_error_increases"][0]["significant"] and note["ae_error_increase_significant"]
    assert "significant" in format_table({"results": [], **note}).splitlines()[-1]

    rows, book = _rows_and_book({1: base * 1.5, 2: base, 3: base * 0.9})
    note = monotonic_note(rows, book)
    assert note["ae_error_nonincreasing_in_eta"] and note["ae_error_increases"] == []
    assert format_table({"results": [], **note}).splitlines()[-1] == "AE error does not increase with η."


def test_band_trend_names_the_band_whose_error_rises_with_eta():
    from fitsae.evaluate.bands import BAND_EDGES
    from fitsae.evaluate.assembly import band_trend

    lows, highs = (None, *BAND_EDGES), (*BAND_EDGES, None)
    # Every band falls with η except the brightest, which rises 10 % from η=2 to η=4.
    per_band = {1: [900.0, 1.2, 2.0, 3.0, 8.0, 20.0, 100.0], 2: [800.0, 1.0, 1.5, 2.5, 6.0, 15.0, 80.0],
                4: [800.0, 0.99, 1.5, 2.4, 5.0, 14.0, 88.0]}
    rows = [{"eta": eta, "latent_values": eta, "compression_ratio": 64.0 / eta, "ae": {"bands": [
        {"snr_low": lo, "snr_high": hi, "pixel_fraction": 0.1, "rmse_over_noise": v, "share_of_error": 0.2}
        for lo, hi, v in zip(lows, highs, values, strict=True)]}} for eta, values in per_band.items()]
    trend = band_trend(rows)
    assert [t["nonincreasing_in_eta"] for t in trend] == [True] * 6 + [False]
    assert trend[-1]["rises"] == [{"from_eta": 2, "to_eta": 4, "increase": pytest.approx(8.0),
                                   "relative_increase": pytest.approx(0.1)}]
    table = format_table({"results": rows, "ae_error_by_band": trend}).splitlines()
    assert table[-1].split()[0] == "≥" and table[-1].endswith("+10.0%")
    assert table[-7].split()[:2] == ["<", "-5σ"] and table[-6].split()[0] == "-5–3σ" and table[-6].endswith("none")
    assert band_trend([{"eta": 1, "ae": {"rmse_over_noise": 1.0}}]) == []  # reports before bands existed


def test_the_rate_distortion_plot_reads_the_aes_coded_bits_when_the_codec_measured_them(tmp_path: Path):
    from fitsae.evaluate.plots import rd_series

    report = _report_from_real_sums(tmp_path)

    def ae_bits():
        ((label, points),) = [(label, pts) for label, _, pts in rd_series(report) if label.startswith("AE, budget")]
        return label, [bits for bits, _, _ in points]

    assert ae_bits() == ("AE, budget η (32-bit latents)", [r["bits_per_pixel"] for r in report["results"]])
    for row in report["results"]:
        row["ae"]["bits_per_pixel_stored"] = row["bits_per_pixel"] / 2
    assert ae_bits()[1] == [r["bits_per_pixel"] / 2 for r in report["results"]]
    for row in report["results"]:
        row["ae"]["bits_per_pixel_coded"] = 0.01 * row["eta"]
    assert ae_bits() == ("AE, budget η (coded bits)", [0.01 * r["eta"] for r in report["results"]])
    labels = [label for label, _, _ in rd_series(report)]
    assert labels == ["AE, budget η (coded bits)", "PCA (32-bit coefficients)", "fpack RICE_1", "fpack HCOMPRESS_1",
                      "JPEG-XL on RICE_1's integers"]
