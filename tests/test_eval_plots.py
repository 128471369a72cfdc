"""What the evaluation figures show: which data, readable axes, the worst tile beside the first.

The reports here are made up (plots read nothing else); the numbers in them only have to have
the ranges real evaluations produce.
"""

from __future__ import annotations

import numpy as np
import pytest

from fitsae.evaluate.calibration import Z_BIN_EDGES
from fitsae.evaluate.plots import draw_figure

FIGURES = ("error_vs_ratio.png", "error_vs_bpp.png", "calibration.png", "examples.png", "pca_spectrum.png")


def _tile(tile_id: int, shown_as: str, etas=(1, 8)) -> dict:
    x = np.random.default_rng(tile_id).normal(size=(16, 16))
    return {"tile_id": tile_id, "noise": 1.0, "input": x.tolist(), "shown_as": shown_as,
            "etas": [{"eta": e, "eta_kept": e, "mu": (0.5 * x).tolist(), "sigma": np.ones_like(x).tolist(),
                      "residual": (0.5 * x).tolist()} for e in etas]}


def make_report(bits_per_pixel=(2, 4, 8, 16, 32, 64)) -> dict:
    """A report whose AE/PCA rows span ``bits_per_pixel`` (2 to 64: a conv AE with stride 4 and
    up to 32 channels of 32-bit latents) beside fpack's 1.7 to 7 bits per pixel."""
    rows = []
    for i, bpp in enumerate(bits_per_pixel):
        error = 2.0 / (1 + i)
        rows.append({"eta": 2 ** i, "compression_ratio": 32 / bpp, "bits_per_pixel": bpp,
                     "ae": {"rmse_over_noise": error, "psnr": 30 + i, "sigma_z_std": 1.0,
                            "z_hist": [0] + [10] * (len(Z_BIN_EDGES) - 1) + [0]},
                     "ae_fixed_mask": {"rmse_over_noise": error * 1.1, "psnr": 29 + i},
                     "pca": {"rmse_over_noise": error * 0.9, "psnr": 31 + i}})
    fpack = [{"compression_type": "RICE_1", "bits_per_pixel": b, "rmse_over_noise": r}
             for b, r in ((1.7, 0.6), (3.2, 0.3), (4.9, 0.07), (6.9, 0.02))]
    return {
        "model": {"kind": "conv", "checkpoint_step": 2000},
        "data": {"paths": ["/data/demo/heldout", "/usr/lib/astropy/m13.fits"], "n_tiles": 33,
                 "eval_shape": [256, 256], "psnr_peak": 1000.0},
        "results": rows,
        "baselines": {"fpack": fpack},
        "pca": {"eigenvalues": [4.0, 2.0, 1.0, 0.5], "dim": 16, "n_vectors": 4096,
                "paths": ["/runs/fc/manifest.jsonl"]},
        "calibration": {"bin_edges": Z_BIN_EDGES.tolist()},
        "examples": {"units": "normalized (noise ≈ 1)",
                     "tiles": [_tile(0, "first tile"), _tile(17, "worst tile: RMSE/σ_noise 3.1 at η=32")]},
    }


def _titles(fig) -> str:
    texts = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    return "\n".join(texts + [ax.get_title() for ax in fig.axes])


@pytest.mark.parametrize("name", FIGURES[:4])
def test_titles_say_which_test_data_they_show(tmp_path, name):
    titles = _titles(draw_figure(make_report(), name, tmp_path))
    assert "test data demo/heldout, astropy/m13.fits (33 tiles of 256×256)" in titles, titles


def test_the_pca_spectrum_says_what_it_was_fitted_on(tmp_path):
    titles = _titles(draw_figure(make_report(), "pca_spectrum.png", tmp_path))
    assert "fitted on training data fc/manifest.jsonl" in titles, titles


@pytest.mark.parametrize("name", ["error_vs_bpp.png", "error_vs_ratio.png"])
def test_log_axis_labels_are_plain_and_never_overlap(tmp_path, name):
    fig = draw_figure(make_report(), name, tmp_path)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        low, high = ax.get_xlim()
        labels = [t for t in ax.get_xticklabels(which="both")
                  if t.get_visible() and t.get_text() and low <= t.get_position()[0] <= high]
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        assert len(boxes) >= 3, [t.get_text() for t in labels]
        assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]
        assert all(t.get_text().replace(".", "").isdigit() for t in labels), [t.get_text() for t in labels]


def test_examples_show_the_worst_tile_below_the_first(tmp_path):
    fig = draw_figure(make_report(), "examples.png", tmp_path)
    # Four panels per row (input, μ, σ, residual) plus a colour bar each; two η per tile.
    rows = [ax for ax in fig.axes if ax.get_title().startswith("input")]
    assert [ax.get_title() for ax in rows] == ["input (tile 0)"] * 2 + ["input (tile 17)"] * 2
    assert [ax.get_ylabel().split("\n")[0] for ax in rows] == ["first tile"] * 2 + ["worst tile:"] * 2
