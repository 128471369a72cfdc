"""``fitsae evaluate --bounded-levels``: the error-bounded modes scored through the codec, beside
RICE_1 and JPEG-XL — every pixel within Δ/2, no bias, and bits that are the bytes ``fitsae
compress`` writes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from eval_helpers import ASTROPY_DATA, CONV_RATE, container_payload, shared_run
from fitsae.cli import main

M13 = ASTROPY_DATA / "hdu" / "compressed" / "tests" / "data" / "m13.fits"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return shared_run(tmp_path_factory, "conv_rate", CONV_RATE, steps=40, checkpoint_every=20)


@pytest.fixture(scope="module")
def evaluated(shared, tmp_path_factory):
    """``fitsae evaluate --bounded-levels 1,4`` on the three held-out 32² fields, run once."""
    from fitsae.cli import main as cli

    out = tmp_path_factory.mktemp("bounded_eval") / "eval"
    code = cli(["evaluate", "--run-dir", str(shared["run"]), "--data", str(shared["test"]), "--etas", "4",
                "--fpack-tiles", "0", "--no-tensorboard", "--bounded-levels", "1,4", "--out", str(out)])
    assert code == 0
    return json.loads((out / "report.json").read_text()), out


def _compress(run, source, out: Path, *mode) -> int:
    code = main([str(a) for a in ["compress", "--run-dir", run, "--eta", 4, "--tile", 256, "--dither-seed", 1,
                                  *mode, source, "--out", out]])
    assert code == 0
    return sum(container_payload(p) for p in ([out] if out.suffix == ".fits" else sorted(out.glob("*.fae.fits"))))


def _assert_bounded_and_unbiased(row: dict) -> None:
    # fitsae's rows are measured on the float64 pixels its decoder returns; RICE decodes to float32.
    assert row["linf_over_delta"] <= 0.5 + (1e-9 if row["codec"] == "fitsae" else 1e-5), row
    assert row["linf_over_delta"] > 0.4, row  # dithered: the error fills the step, not only its centre
    assert abs(row["mean_bias_over_noise"]) <= 3 * row["mean_bias_standard_error_over_noise"], row


def test_fitsae_rows_are_within_half_a_step_unbiased_and_cost_what_compress_writes(shared, evaluated, tmp_path):
    report, _ = evaluated
    rows = report["bounded"]
    assert [(r["codec"], r["quantize_level"]) for r in rows] == [
        (c, q) for q in (1.0, 4.0) for c in ("fitsae", "RICE_1", "JPEG_XL")]
    for row in rows:
        assert row["pixels"] == 3 * 32 * 32 and row["bits_per_pixel"] == 8 * row["payload_bytes"] / row["pixels"]
        _assert_bounded_and_unbiased(row)
    ours = {r["quantize_level"]: r for r in rows if r["codec"] == "fitsae"}
    for q in (1.0, 4.0):
        written = _compress(shared["run"], shared["test"], tmp_path / f"q{q:g}", "--quantize-level", q, "--int-to-float")
        assert ours[q]["payload_bytes"] == written
    # JPEG-XL decodes to RICE's pixels exactly (same integers, same dither): same errors, other bits.
    for q in (1.0, 4.0):
        rice, jxl = (next(r for r in rows if r["codec"] == c and r["quantize_level"] == q) for c in ("RICE_1", "JPEG_XL"))
        assert jxl["rmse_over_noise"] == rice["rmse_over_noise"] and jxl["payload_bytes"] != rice["payload_bytes"]


def test_the_table_and_the_plot_show_every_row(evaluated, capsys):
    from fitsae.cli import main as cli
    from fitsae.evaluate.plots import draw_figure

    report, out = evaluated
    assert cli(["evaluate", "--plot-only", str(out)]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("error-bounded modes"):].splitlines()
    for row in report["bounded"]:
        line = next(ln for ln in table if ln.split()[:2] == [f"{row['quantize_level']:g}", row["codec"]])
        assert f"{row['bits_per_pixel']:.3f}" in line and f"{row['linf_over_delta']:.3f}" in line
    fig = draw_figure(report, "error_vs_bpp.png", out)
    drawn = {line.get_label(): line for line in fig.axes[0].get_lines()}
    line = drawn["fitsae error-bounded, q = σ/Δ (whole planes)"]
    ours = sorted((r["bits_per_pixel"], r["rmse_over_noise"]) for r in report["bounded"] if r["codec"] == "fitsae")
    np.testing.assert_allclose(np.column_stack(line.get_data()), ours)
    assert "RICE_1 at the same q (whole planes)" in drawn and "JPEG-XL on those integers (whole planes)" in drawn


def test_m13_lossless_row_is_exact_and_is_the_lossless_container(shared, tmp_path):
    """M13 (int16): the lossless rows are exact, and q = 1 keeps the bound and the zero mean."""
    from fitsae.codec import artifact
    from fitsae.data.manifest import index_paths
    from fitsae.evaluate.bounded import bounded_rows

    frozen = artifact.load_frozen(artifact.freeze(shared["run"]))
    manifest, _ = index_paths([str(M13)], replace(frozen.cfg.data, edge="pad"))
    rows = bounded_rows(frozen, list(manifest), levels=(1.0,))
    by = {(r["codec"], r["quantize_level"]): r for r in rows}
    assert set(by) == {(c, q) for c in ("fitsae", "RICE_1", "JPEG_XL") for q in (1.0, None)}
    for codec in ("fitsae", "RICE_1", "JPEG_XL"):
        exact = by[codec, None]
        assert exact["rmse_over_noise"] == 0 and exact["linf_over_delta"] == 0, exact
    assert by["fitsae", None]["payload_bytes"] == _compress(shared["run"], M13, tmp_path / "m13.fae.fits", "--lossless")
    q1 = by["fitsae", 1.0]
    assert q1["payload_bytes"] == _compress(shared["run"], M13, tmp_path / "m13q1.fae.fits", "--quantize-level", 1,
                                            "--int-to-float")
    assert 0.45 < q1["linf_over_delta"] <= 0.5 + 1e-9  # at the requested step, as RICE_1: not lossless
    assert abs(q1["mean_bias_over_noise"]) <= 3 * q1["mean_bias_standard_error_over_noise"], q1
