"""``--kind sky``: deterministic frames whose TRUTH and SIGMA are right, with the features the knobs promise."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits

from fitsae.cli import simulate as simulate_cli
from fitsae.data.config import DataConfig
from fitsae.data.manifest import index_paths
from fitsae.data.simulate import simulate
from fitsae.data.sky import SkyKnobs, _bleed, knobs_from_strings, sky_field
from fitsae.data.sky_sources import PSFStamps

# Everything but the sky and the detector's noise switched off; tests switch one thing back on.
BARE = SkyKnobs(stars=(0, 0), cluster_probability=0.0, galaxies=(0, 0), diffuse_probability=0.0,
                gradient=(0.0, 0.0), vignetting=(0.0, 0.0), cosmic_rays=(0.0, 0.0), hot_pixel_fraction=(0, 0),
                hot_columns=(0, 0), dead_columns=(0, 0), overscan_probability=0.0,
                sky=(200.0, 200.0), gain=(2.0, 2.0), read_noise=(6.0, 6.0), bias=(1000.0, 1000.0))


def test_frames_are_deterministic_in_seed_and_index_and_a_cube_holds_the_same_planes(tmp_path):
    a = simulate("sky", 2, 48, tmp_path / "a", seed=3, dtype="int16")
    b = simulate("sky", 2, 48, tmp_path / "b", seed=3, dtype="int16")
    c = simulate("sky", 2, 48, tmp_path / "c", seed=4, dtype="int16")
    cube = simulate("sky", 2, 48, tmp_path / "cube", seed=3, dtype="int16", cube=True)
    with fits.open(cube[0]) as cube_hdul:
        for plane, (x, y, z) in enumerate(zip(a, b, c, strict=True)):
            with fits.open(x) as hx, fits.open(y) as hy, fits.open(z) as hz:
                for name in ("PRIMARY", "TRUTH", "SIGMA"):
                    np.testing.assert_array_equal(hx[name].data, hy[name].data)
                    np.testing.assert_array_equal(hx[name].data, cube_hdul[name].data[plane])
                    assert not np.array_equal(hx[name].data, hz[name].data)


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_data_minus_truth_over_sigma_is_unit_noise(dtype):
    z = []
    for i in range(12):
        field = sky_field(np.random.default_rng([7, i]), 64, dtype=dtype)
        noisy = field.sigma > 0.3  # saturated pixels carry only the rounding (int16) or nothing
        z.append((field.data.astype(np.float64) - field.truth)[noisy] / field.sigma[noisy])
    z = np.concatenate(z)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02


def test_bleeding_moves_the_excess_charge_along_its_column_and_keeps_it():
    full_well = 100.0
    electrons = np.full((40, 5), 10.0)
    electrons[18:21, 2] = [250.0, 400.0, 250.0]  # 600 e- above the full well
    before = electrons.copy()
    _bleed(electrons, full_well)
    assert electrons.sum() == pytest.approx(before.sum())
    assert electrons.max() == full_well
    np.testing.assert_array_equal(np.delete(electrons, 2, axis=1), np.delete(before, 2, axis=1))
    saturated = np.flatnonzero(electrons[:, 2] == full_well)
    # 3 pixels at the well + 600 e- filling 90 e- of room each: 300 up, 300 down.
    assert saturated.tolist() == list(range(15, 24))


def test_a_saturated_star_reads_the_saturation_level_with_a_trail_along_its_column():
    knobs = dataclasses.replace(BARE, stars=(8.0, 8.0), star_flux=(3e6, 3e6), full_well=(5e4, 5e4),
                                psf_fwhm=(2.5, 2.5))
    field = sky_field(np.random.default_rng(0), 128, knobs, dtype="int16")
    saturate = field.header["SATURATE"][0]
    assert saturate == 1000.0 + 5e4 / 2.0
    saturated = field.data == saturate
    assert saturated.sum() > 0
    np.testing.assert_array_equal(field.data[field.truth == np.float32(saturate)], saturate)  # no noise at the well
    np.testing.assert_array_equal(field.truth[saturated], np.float32(saturate))
    np.testing.assert_allclose(field.sigma[saturated], np.sqrt(1 / 12), rtol=1e-6)
    longest = lambda mask: max(np.diff(np.flatnonzero(np.diff(np.r_[0, m.astype(int), 0]))).max(initial=0)  # noqa: E731
                               for m in mask)
    assert longest(saturated.T) >= 3 * longest(saturated)


def test_overscan_strips_and_dead_columns_hold_only_bias_and_read_noise():
    knobs = dataclasses.replace(BARE, overscan_probability=1.0, overscan_width=(8, 8), dead_columns=(1, 1),
                                stars=(200.0, 200.0))
    field = sky_field(np.random.default_rng(1), 128, knobs, dtype="float32")
    assert (field.header["PRESCAN"][0], field.header["OVERSCAN"][0], field.header["OVERSCNY"][0]) == (8, 8, 8)
    strips = np.zeros(field.data.shape, bool)
    strips[:, :8] = strips[:, -8:] = strips[-8:, :] = True
    np.testing.assert_array_equal(field.truth[strips], np.float32(1000.0))
    np.testing.assert_array_equal(field.sigma[strips], np.float32(3.0))  # read noise 6 e- / gain 2
    assert abs(field.data[strips].std() / 3.0 - 1) < 0.05
    dead = [c for c in range(8, 120) if np.any(field.truth[:120, c] == np.float32(1000.0))]
    assert len(dead) == 1


def test_a_king_cluster_piles_its_light_into_the_core():
    knobs = dataclasses.replace(BARE, cluster_probability=1.0, cluster_stars=(3000, 3000), cluster_core_radius=(5.0, 5.0),
                                cluster_concentration=(1.5, 1.5), star_flux=(300.0, 3e4), sky=(1.0, 1.0))
    field = sky_field(np.random.default_rng(2), 256, knobs, dtype="float32")
    light = (field.truth - 1000.0) * 2.0 - 1.0  # electrons above the sky
    cx, cy = field.header["CLUSTERX"][0], field.header["CLUSTERY"][0]
    yy, xx = np.indices(light.shape)
    r = np.hypot(xx - cx, yy - cy)
    assert light[r < 5].mean() > 10 * light[(r > 30) & (r < 40)].mean() > 0


@pytest.mark.parametrize("knob, key, value", [
    ("sky", "SKYLEVEL", 321.5), ("gain", "GAIN", 1.75), ("read_noise", "RDNOISE", 4.25), ("bias", "BIAS", 512.5),
    ("full_well", "FULLWELL", 6.5e4), ("pixel_scale", "PIXSCALE", 0.375), ("psf_fwhm", "FWHM", 2.75),
    ("psf_ellipticity", "PSFELL", 0.125), ("moffat_beta", "PSFBETA", 3.25), ("gradient", "GRADIENT", 0.25),
    ("vignetting", "VIGNET", 0.0625), ("star_slope", "STARSLOP", 0.625), ("cluster_core_radius", "KINGRC", 7.5),
])
def test_a_knob_fixed_to_one_value_is_the_value_the_field_records(knob, key, value):
    knobs = dataclasses.replace(BARE, **{knob: (value, value)}, psf_kolmogorov_probability=0.0,
                                cluster_probability=1.0, cluster_stars=(10, 10))
    assert sky_field(np.random.default_rng(5), 32, knobs).header[key][0] == value


def test_a_knob_written_with_an_exponent_and_no_dot_is_a_number():
    assert knobs_from_strings(["sky=[1e2, 15e1]"]).sky == (100.0, 150.0)


def test_knobs_are_strict():
    assert knobs_from_strings(["sky=[5, 5]", "cluster_probability=1"]).sky == (5.0, 5.0)
    with pytest.raises(ValueError, match="knob.nope"):
        knobs_from_strings(["nope=1"])
    with pytest.raises(ValueError, match="low <= high"):
        knobs_from_strings(["gain=[4, 1]"])
    with pytest.raises(ValueError, match="probability"):
        knobs_from_strings(["cluster_probability=2"])
    with pytest.raises(ValueError, match="log-uniformly"):
        knobs_from_strings(["stars=[0, 10]"])


def test_cli_writes_frames_with_truth_and_sigma_and_index_lists_only_the_frame(tmp_path, capsys):
    assert simulate_cli.main(["--kind", "sky", "--n", "2", "--size", "32", "--out", str(tmp_path / "sky"),
                              "--dtype", "int16", "--knob", "sky=[300,300]"]) == 0
    with fits.open(tmp_path / "sky" / "sky_00000.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "TRUTH", "SIGMA"]
        assert hdul[0].header["BITPIX"] == 16 and hdul[0].header["BZERO"] == 32768
        assert hdul["TRUTH"].header["BITPIX"] == hdul["SIGMA"].header["BITPIX"] == -32
        assert hdul[0].header["SKYLEVEL"] == 300.0 and hdul[0].header["NOISE"] > 0
    manifest, rejected = index_paths([str(tmp_path / "sky")], DataConfig(tile=32))
    assert not rejected and sorted((row.path.rsplit("/", 1)[1], row.hdu) for row in manifest) == [
        ("sky_00000.fits", 0), ("sky_00001.fits", 0)]
    assert simulate_cli.main(["--kind", "toy", "--n", "1", "--out", str(tmp_path / "toy"), "--knob", "sky=[1,1]"]) == 2
    assert "--knob applies to --kind sky" in capsys.readouterr().err
    assert simulate_cli.main(["--kind", "sky", "--n", "1", "--out", str(tmp_path), "--knob", "gain=[4,1]"]) == 2


def test_only_files_fitsae_simulated_have_their_sigma_extension_skipped(tmp_path):
    image = np.ones((16, 16), np.float32)
    fits.HDUList([fits.PrimaryHDU(image), fits.ImageHDU(image, name="SIGMA")]).writeto(tmp_path / "user.fits")
    manifest, _ = index_paths([str(tmp_path / "user.fits")], DataConfig(tile=16))
    assert [row.hdu for row in manifest] == [0, 1]


@pytest.mark.parametrize("kind", ["moffat", "kolmogorov"])
@pytest.mark.parametrize("flux", [1e3, 1e8])  # a core stamp; a bright star's wide wings
def test_a_star_is_galsims_pixel_integrated_psf_at_its_subpixel_position(kind, flux):
    import galsim

    psf = galsim.Moffat(beta=2.5, fwhm=0.5) if kind == "moffat" else galsim.Kolmogorov(fwhm=0.5)
    psf = psf.shear(e=0.1, beta=0.4 * galsim.radians)  # FWHM 2 pixels at 0.25″/pixel
    stamps = PSFStamps(psf, 0.25, sky_sigma_e=1.0, field_size=128)
    for x, y in [(60.375, 70.125), (71.875, 52.625)]:  # sub-pixel phases are stored at ±1/8, ±3/8
        image = np.zeros((128, 128))
        stamps.add_stars(image, np.array([x]), np.array([y]), np.array([flux]))
        # GalSim integrates over the pixel by FFT; fitsae sums 8×8 samples: they agree to 0.2 %.
        expected = psf.withFlux(flux).drawImage(nx=128, ny=128, scale=0.25, offset=(x - 63.5, y - 63.5)).array
        np.testing.assert_allclose(image, expected, rtol=0, atol=3e-3 * expected.max())
        if flux > 1e6:  # beyond the core the wing is the PSF sampled at pixel centres
            sampled = psf.withFlux(flux).drawImage(nx=128, ny=128, scale=0.25, method="no_pixel",
                                                   offset=(x - 63.5, y - 63.5)).array
            beyond = np.ones(image.shape, bool)
            beyond[round(y) - 48:round(y) + 49, round(x) - 48:round(x) + 49] = False
            np.testing.assert_allclose(image[beyond], sampled[beyond], rtol=1e-6)


def test_thousands_of_stars_added_by_fft_match_the_stamps_one_by_one(monkeypatch):
    import galsim

    from fitsae.data import sky_sources

    rng = np.random.default_rng(0)
    x, y = rng.uniform(-10, 74, (2, 400))
    flux = rng.uniform(10, 1000, 400)
    stamps = PSFStamps(galsim.Moffat(beta=3.0, fwhm=0.6), 0.25, sky_sigma_e=1e-4, field_size=64)
    images = []
    for stamp_cost in (0.0, 1e12):  # never, always by FFT
        monkeypatch.setattr(sky_sources, "STAMP_COST", stamp_cost)
        images.append(np.zeros((64, 64)))
        stamps.add_stars(images[-1], x, y, flux)
    # One by one, each stamp is cut where its wing falls below the tolerance; by FFT it is not.
    np.testing.assert_allclose(images[1], images[0], rtol=0, atol=len(flux) * stamps.tolerance)
    assert images[0].max() > 1e6 * stamps.tolerance
