"""Aperture photometry: known fluxes come back, a known bias is the error, the cuts do what they say."""

import math

import numpy as np
import pytest

from fitsae.evaluate.photometry import aperture_fluxes, detect_sources, flux_errors

BACKGROUND = 100.0
# (row, column, flux): compact 3×3 sources, wholly inside a radius-4 aperture; the last one is
# faint (aperture SNR ≈ 14 with σ = 1), the others bright.
SOURCES = [(15, 15, 1000.0), (40, 20, 5000.0), (30, 48, 20000.0), (50, 45, 100.0)]


def field(scale=1.0, sources=SOURCES):
    """Flat background plus box sources whose fluxes are multiplied by ``scale``."""
    image = np.full((64, 64), BACKGROUND)
    for y, x, flux in sources:
        image[y - 1:y + 2, x - 1:x + 2] += scale * flux / 9
    return image


def test_detected_sources_have_the_fluxes_they_were_given():
    sources = detect_sources(field(), 1.0, radius=4.0)
    order = np.lexsort((sources.x, sources.y))
    found = sorted(zip(np.rint(sources.y).astype(int), np.rint(sources.x).astype(int)))
    assert found == sorted((y, x) for y, x, _ in SOURCES)
    expected = [f for _, _, f in sorted(SOURCES)]
    np.testing.assert_allclose(sources.flux[order], expected, rtol=0, atol=0.1)
    np.testing.assert_allclose(sources.flux_err, math.sqrt(math.pi * 16), rtol=1e-6)  # σ√(aperture area)


def test_a_reconstruction_biased_by_a_known_factor_scores_that_factor():
    sources = detect_sources(field(), 1.0, radius=4.0)
    result = flux_errors(sources, field(scale=0.97))
    assert (result.n_sources, result.n_used) == (4, 3)  # the SNR-14 source is below the cut of 20
    assert result.median_relative_error == pytest.approx(-0.03, abs=1e-5)
    assert result.median_abs_relative_error == pytest.approx(0.03, abs=1e-5)


def test_the_snr_cut_is_measured_on_the_original():
    sources = detect_sources(field(), 1.0, radius=4.0)
    assert sorted(np.rint(sources.snr).astype(int)) == [14, 141, 705, 2821]
    assert flux_errors(sources, field(), snr_min=10).n_used == 4
    assert flux_errors(sources, field(), snr_min=200).n_used == 2


def test_apertures_crossing_the_edge_are_left_out():
    sources = detect_sources(field(sources=SOURCES + [(2, 30, 5000.0)]), 1.0, radius=4.0)
    assert sources.n_detected == 5 and len(sources.x) == 4


def test_the_default_aperture_is_twice_the_half_light_radius():
    sigma = 2.0
    yy, xx = np.mgrid[:96, :96]
    image = np.full((96, 96), BACKGROUND)
    for y, x in [(30, 30), (60, 70), (70, 25)]:
        image += 5000 / (2 * math.pi * sigma ** 2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2))
    sources = detect_sources(image, 1.0)
    assert sources.radius == pytest.approx(2 * sigma * math.sqrt(2 * math.log(2)), rel=0.03)


def test_no_sources_gives_nan_not_an_error():
    sources = detect_sources(np.full((32, 32), BACKGROUND), 1.0)
    result = flux_errors(sources, np.full((32, 32), BACKGROUND))
    assert (result.n_sources, result.n_used) == (0, 0) and math.isnan(result.median_abs_relative_error)


def test_bad_images_are_refused_with_the_reason():
    image = field()
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        detect_sources(image, 1.0)
    with pytest.raises(ValueError, match="sigma > 0"):
        detect_sources(field(), np.zeros((64, 64)))
    sources = detect_sources(field(), 1.0, radius=4.0)
    with pytest.raises(ValueError, match="shape"):
        aperture_fluxes(sources, np.zeros((32, 32)))


def test_the_flux_medians_interval_is_the_order_statistics_n_over_2_plus_or_minus_a_root_n():
    """Sources split over two tiles: the 95 % interval of the median |ΔF|/F is the n/2 ± 0.98·√n-th
    smallest of the n values, within the histogram's bin width, and holds the median."""
    from fitsae.evaluate.flux_sums import FluxSums

    errors = np.random.default_rng(0).lognormal(-4.0, 1.0, 400) * np.where(np.arange(400) % 2, 1, -1)
    sums = FluxSums()
    sums.update(errors[:150], 150)
    sums.update(errors[150:], 250)
    figures = sums.summary()
    low, high = figures["median_abs_relative_flux_error_ci95"]
    expected = np.quantile(np.abs(errors), [0.5 - 0.98 / 20, 0.5 + 0.98 / 20])
    assert low == pytest.approx(expected[0], rel=0.05) and high == pytest.approx(expected[1], rel=0.05)
    assert low < figures["median_abs_relative_flux_error"] < high


def test_without_sources_the_flux_median_is_nan_and_its_interval_none():
    from fitsae.evaluate.flux_sums import FluxSums

    figures = FluxSums().summary()
    assert math.isnan(figures["median_abs_relative_flux_error"]) and figures["median_abs_relative_flux_error_ci95"] is None


def test_the_printed_photometry_table_shows_the_codecs_interval_in_percent():
    from fitsae.evaluate.report import _photometry_lines

    figure = {"median_abs_relative_flux_error": 0.0104, "median_abs_relative_flux_error_ci95": [0.0085, 0.0128],
              "n_used": 189, "n_sources": 208, "snr_min": 20.0}
    report = {"results": [{"eta": 4, "ae": {"photometry": figure}, "ae_fixed_mask": {"photometry": figure},
                           "pca": {"photometry": figure}}]}
    header, columns, row = _photometry_lines(report)
    assert columns.endswith("codec 95 % interval") and row.endswith("0.850–1.280")
