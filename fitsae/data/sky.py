"""Simulated CCD frames that look like the sky: ``fitsae simulate --kind sky``.

Contract: every frame draws its own scene and detector from the ranges of :class:`SkyKnobs`
(recorded in its header) and is a function of (seed, frame index) alone. It comes with its
noiseless expected image ``TRUTH`` (ADU; cosmic rays included: they are charge, not noise) and
its true per-pixel σ ``SIGMA`` (ADU: √(expected electrons + read noise²)/gain, plus the 1/√12
rounding of int16 output), so ``(data − TRUTH)/SIGMA`` is unit noise everywhere but at
saturated pixels; the primary's ``NOISE`` is the σ of the sky alone (``SKYLEVEL``).

Why: a model trained on clean fields of a few galaxies fails on real frames (crowded clusters,
bleed trails, hot columns, overscan strips); a training set must span them. The light is drawn
by :mod:`fitsae.data.sky_sources`; the README ("Data") lists the scene and its knobs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitsae.data.sky_knobs import GALAXY_KINDS, SkyKnobs, knobs_from_strings
from fitsae.data.sky_sources import PSFStamps, add_stamp, convolve, galaxy_profile, galaxy_stamp, king_radii, power_law

__all__ = ["SkyKnobs", "SkyField", "sky_field", "simulate_sky", "write_sky_fits", "knobs_from_strings"]

ADC_MAX = 65535.0

@dataclass
class SkyField:
    """One simulated frame.

    Attributes
    ----------
    data : ndarray
        The frame in ADU: float32, or uint16 (rounded) when drawn with ``dtype="int16"``.
    truth : ndarray of float32
        Expected value of every pixel, ADU (noiseless, cosmic rays included).
    sigma : ndarray of float32
        True noise σ of every pixel, ADU.
    noise : float
        σ of the sky alone at ``SKYLEVEL``, ADU (the header's ``NOISE``).
    header : dict
        FITS keyword → (value, comment): every value drawn for this field.
    """

    data: np.ndarray
    truth: np.ndarray
    sigma: np.ndarray
    noise: float
    header: dict


def _uniform(rng, pair):
    return float(rng.uniform(pair[0], pair[1])) if pair[1] > pair[0] else float(pair[0])


def _loguniform(rng, pair):
    return float(math.exp(rng.uniform(math.log(pair[0]), math.log(pair[1])))) if pair[1] > pair[0] else float(pair[0])




def _gaussian_random_field(rng, size, index):
    """Unit-variance Gaussian random field with power spectrum ∝ k^−index."""
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.rfftfreq(size), indexing="ij"))
    k[0, 0] = np.inf  # no mean: the amplitude sets the level
    spectrum = np.fft.rfft2(rng.normal(size=(size, size))) * k ** (-index / 2)
    field = np.fft.irfft2(spectrum, s=(size, size))
    return field / field.std()




def _bleed(electrons, full_well):
    """Move the charge above ``full_well`` along each column, half up and half down, filling
    neighbours to the full well; charge that reaches the frame edge is lost (as off-chip)."""
    for col in np.flatnonzero((electrons > full_well).any(axis=0)):
        column = electrons[:, col]
        over = column > full_well
        edges = np.flatnonzero(np.diff(np.concatenate([[0], over.view(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            excess = float(np.sum(column[start:stop] - full_well))
            column[start:stop] = full_well
            for neighbours in (np.arange(start - 1, -1, -1), np.arange(stop, len(column))):
                room = np.maximum(full_well - column[neighbours], 0.0)
                filled = np.cumsum(room)
                full = int(np.searchsorted(filled, excess / 2, side="right"))
                column[neighbours[:full]] = full_well
                if full < len(neighbours):
                    column[neighbours[full]] += excess / 2 - (filled[full - 1] if full else 0.0)
        electrons[:, col] = column


def sky_field(rng: np.random.Generator, size: int, knobs: SkyKnobs = SkyKnobs(),
              dtype: str = "float32") -> SkyField:
    """Draw one field's scene and detector from ``knobs`` and simulate its frame.

    The scene, in electrons: a sky level with a smooth gradient and vignetting; diffuse emission
    (a log-normal Gaussian random field with a power-law spectrum); field stars with a power-law
    luminosity function and, in some fields, a King-profile globular cluster; galaxies (bulge +
    disk, Sérsic, edge-on, clumpy irregular), all convolved with the field's Moffat or Kolmogorov
    PSF by GalSim. The detector then adds hot pixels, partial hot and dead columns and cosmic
    rays, bleeds charge above full well along columns, blanks the prescan/overscan strips (bias
    and read noise only), converts to ADU with bias and gain, draws Poisson and read noise and
    clips at saturation.

    Parameters
    ----------
    rng : numpy.random.Generator
        The only source of randomness (GalSim's own generators are seeded from it), so a
        field is a function of the generator's state.
    size : int
        Side of the square frame, pixels.
    knobs : SkyKnobs
        Ranges to draw from.
    dtype : {"float32", "int16"}
        ``int16`` rounds to integer ADU (uint16 in memory, written as int16 + ``BZERO``) and
        adds the rounding's 1/√12 ADU to ``sigma``.
    """
    import galsim

    if dtype not in ("float32", "int16"):
        raise ValueError(f"--dtype {dtype!r}: choose float32 or int16")
    area = (size / 256.0) ** 2
    header = {}

    # Detector and sky first: the stamps' cut-off depends on the sky noise.
    sky = _loguniform(rng, knobs.sky)
    read_noise = _uniform(rng, knobs.read_noise)
    gain = _loguniform(rng, knobs.gain)
    bias = _uniform(rng, knobs.bias)
    full_well = _loguniform(rng, knobs.full_well)
    saturation = min(bias + full_well / gain, ADC_MAX)
    sky_sigma_e = math.sqrt(sky + read_noise ** 2)

    pixel_scale = _loguniform(rng, knobs.pixel_scale)
    fwhm = _loguniform(rng, knobs.psf_fwhm)
    kolmogorov = bool(rng.uniform() < knobs.psf_kolmogorov_probability)
    beta = _uniform(rng, knobs.moffat_beta)
    psf_e = _uniform(rng, knobs.psf_ellipticity)
    psf_angle = float(rng.uniform(0, math.pi))
    psf = galsim.Kolmogorov(fwhm=fwhm * pixel_scale) if kolmogorov else galsim.Moffat(beta=beta, fwhm=fwhm * pixel_scale)
    psf = psf.shear(e=psf_e, beta=psf_angle * galsim.radians)
    header.update(SKYLEVEL=(sky, "sky at the frame centre, e-/pixel"), RDNOISE=(read_noise, "read noise, e-"),
                  GAIN=(gain, "e-/ADU"), BIAS=(bias, "bias level, ADU"), FULLWELL=(full_well, "e-"),
                  SATURATE=(saturation, "saturation level, ADU"), PIXSCALE=(pixel_scale, "arcsec/pixel"),
                  PSF=("kolmogorov" if kolmogorov else "moffat", "PSF profile"),
                  FWHM=(fwhm, "PSF FWHM, pixels"), PSFBETA=(beta if not kolmogorov else 0.0, "Moffat beta"),
                  PSFELL=(psf_e, "PSF ellipticity"))

    electrons = np.zeros((size, size))
    yy, xx = (np.indices((size, size)) + 0.5) / size - 0.5
    gradient = _uniform(rng, knobs.gradient)
    vignetting = _uniform(rng, knobs.vignetting)
    theta = float(rng.uniform(0, 2 * math.pi))
    electrons += sky * (1 + gradient * (xx * math.cos(theta) + yy * math.sin(theta))
                        - vignetting * 2 * (xx ** 2 + yy ** 2))
    header.update(GRADIENT=(gradient, "sky gradient across the frame, fraction"),
                  VIGNET=(vignetting, "sky fall-off to the corners, fraction"))

    diffuse = 0.0
    if rng.uniform() < knobs.diffuse_probability:
        diffuse = _loguniform(rng, knobs.diffuse_amplitude)
        contrast = _uniform(rng, knobs.diffuse_contrast)
        g = np.exp(contrast * _gaussian_random_field(rng, size, _uniform(rng, knobs.diffuse_spectral_index)))
        electrons += diffuse * sky_sigma_e * g / g.mean()
    header["DIFFUSE"] = (diffuse, "diffuse emission mean level, sky sigma")

    psf_stamps = PSFStamps(psf, pixel_scale, sky_sigma_e, size)
    slope = _uniform(rng, knobs.star_slope)
    brightest = _loguniform(rng, (min(knobs.star_flux[0] * 100, knobs.star_flux[1]), knobs.star_flux[1]))
    margin = min(32, size // 4)  # stars just outside the frame still throw light in
    n_field = int(rng.poisson(_loguniform(rng, knobs.stars) * area * ((size + 2 * margin) / size) ** 2))
    x, y = rng.uniform(-margin, size + margin, (2, n_field)) - 0.5
    stars = [(x, y, power_law(rng, n_field, knobs.star_flux[0], brightest, slope))]
    n_cluster = 0
    if rng.uniform() < knobs.cluster_probability:
        n_cluster = int(round(_loguniform(rng, knobs.cluster_stars)))
        core = _loguniform(rng, knobs.cluster_core_radius)
        tidal = core * 10 ** _uniform(rng, knobs.cluster_concentration)
        cx, cy = rng.uniform(0.1 * size, 0.9 * size, 2)
        r = king_radii(rng, n_cluster, core, tidal)
        phi = rng.uniform(0, 2 * math.pi, n_cluster)
        flux = power_law(rng, n_cluster, knobs.star_flux[0], brightest, slope)
        sx, sy = cx + r * np.cos(phi), cy + r * np.sin(phi)
        inside = (np.abs(sx - size / 2) < size / 2 + margin) & (np.abs(sy - size / 2) < size / 2 + margin)
        stars.append((sx[inside], sy[inside], flux[inside]))
        header.update(KINGRC=(core, "cluster King core radius, pixels"), KINGRT=(tidal, "tidal radius, pixels"),
                      CLUSTERX=(float(cx), "cluster centre, 0-based pixel x"), CLUSTERY=(float(cy), "... y"))
    psf_stamps.add_stars(electrons, *(np.concatenate(column) for column in zip(*stars, strict=True)))
    header.update(NSTARS=(n_field, "field stars"), NCLUSTER=(n_cluster, "cluster stars"),
                  STARMAX=(brightest, "brightest star flux cap, e-"), STARSLOP=(slope, "N(>F) ~ F^-slope"))

    n_galaxies = int(rng.poisson(_loguniform(rng, knobs.galaxies) * area * (pixel_scale / 0.5) ** 2))
    weights = np.asarray(knobs.galaxy_kinds, float) / sum(knobs.galaxy_kinds)
    galaxies, brightest_galaxy = np.zeros((size, size)), 0.0
    for _ in range(n_galaxies):
        morphology = GALAXY_KINDS[int(rng.choice(len(GALAXY_KINDS), p=weights))]
        flux = float(power_law(rng, 1, knobs.galaxy_flux[0], knobs.galaxy_flux[1], 0.7)[0])
        hlr = _loguniform(rng, knobs.galaxy_half_light_radius)
        gx, gy = rng.uniform(0, size, 2) - 0.5
        half = int(min(size, max(4, 5 * hlr / pixel_scale)))
        stamp = galaxy_stamp(galaxy_profile(galsim, rng, morphology, flux, hlr), pixel_scale, hlr / pixel_scale,
                             half, float(gx - round(gx)), float(gy - round(gy)))
        add_stamp(galaxies, stamp, int(round(gy)) - half, int(round(gx)) - half, 1.0)
        brightest_galaxy = max(brightest_galaxy, flux)
    if n_galaxies:
        electrons += convolve(galaxies, psf_stamps.kernel(brightest_galaxy))
    header["NGALAXY"] = (n_galaxies, "galaxies")

    # Detector defects: fixed-pattern charge, then the cosmic rays of this exposure.
    n_hot = int(rng.binomial(size * size, _loguniform(rng, knobs.hot_pixel_fraction)))
    hot = rng.choice(size * size, n_hot, replace=False)
    electrons.ravel()[hot] += np.exp(rng.uniform(*np.log(knobs.hot_pixel_charge), n_hot))
    n_hot_columns = int(rng.integers(knobs.hot_columns[0], knobs.hot_columns[1] + 1))
    for _ in range(n_hot_columns):
        col, first = int(rng.integers(0, size)), int(rng.integers(0, size))
        electrons[first:, col] += _loguniform(rng, knobs.hot_pixel_charge)
    n_cosmic = int(rng.poisson(_uniform(rng, knobs.cosmic_rays) * area))
    for _ in range(n_cosmic):
        length = _loguniform(rng, knobs.cosmic_ray_length)
        x0, y0, angle = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0, 2 * math.pi)
        t = np.arange(0.0, length + 0.5, 0.5)
        px, py = np.floor(x0 + t * math.cos(angle)).astype(int), np.floor(y0 + t * math.sin(angle)).astype(int)
        ok = (px >= 0) & (px < size) & (py >= 0) & (py < size)
        np.add.at(electrons, (py[ok], px[ok]), _loguniform(rng, knobs.cosmic_ray_charge) / 2)
    _bleed(electrons, full_well)
    n_dead = int(rng.integers(knobs.dead_columns[0], knobs.dead_columns[1] + 1))
    for _ in range(n_dead):
        col, first = int(rng.integers(0, size)), int(rng.integers(0, size))
        electrons[first:, col] = 0.0
    strips = [int(rng.integers(knobs.overscan_width[0], knobs.overscan_width[1] + 1))
              if rng.uniform() < knobs.overscan_probability else 0 for _ in range(3)]
    prescan, overscan, overscan_rows = (min(s, size // 4) for s in strips)
    electrons[:, :prescan] = 0.0
    electrons[:, size - overscan:] = 0.0
    electrons[size - overscan_rows:, :] = 0.0
    header.update(NHOTPIX=(n_hot, "hot pixels"), NHOTCOL=(n_hot_columns, "hot columns"),
                  NDEADCOL=(n_dead, "dead columns"), NCOSMIC=(n_cosmic, "cosmic-ray tracks"),
                  PRESCAN=(prescan, "prescan columns at the left"), OVERSCAN=(overscan, "overscan columns at the right"),
                  OVERSCNY=(overscan_rows, "overscan rows at the top"))

    # Readout: the expected ADU, then Poisson + read noise; saturated pixels read exactly the
    # saturation level (no noise), as do pixels the noise pushes above it. (The clip only drops
    # FFT round-off and the negative sky that extreme gradient knobs could ask for.)
    electrons = np.maximum(electrons, 0.0)
    expected = bias + electrons / gain
    saturated = (electrons >= full_well) | (expected >= ADC_MAX)
    truth = np.minimum(expected, saturation)
    counts = rng.poisson(electrons) + rng.normal(0.0, read_noise, electrons.shape)
    data = np.clip(bias + counts / gain, 0.0, saturation)
    data[saturated] = saturation
    variance = np.where(saturated, 0.0, (electrons + read_noise ** 2) / gain ** 2)
    noise = math.sqrt(sky + read_noise ** 2) / gain
    if dtype == "int16":
        data = np.rint(data).astype(np.uint16)
        variance = variance + 1 / 12
        noise = math.sqrt(noise ** 2 + 1 / 12)
    else:
        data = data.astype(np.float32)
    return SkyField(data=data, truth=truth.astype(np.float32), sigma=np.sqrt(variance).astype(np.float32),
                    noise=noise, header=header)


def write_sky_fits(path: Path, data: np.ndarray, truth: np.ndarray, sigma: np.ndarray, noise: float,
                   seed: int, header: dict | None = None) -> Path:
    """Write a frame (or cube) with its ``TRUTH`` and ``SIGMA`` image extensions.

    The primary HDU carries the data, ``NOISE`` (background σ, ADU), ``SIMKIND``/``SIMSEED``
    and the field's drawn values; uint16 data are stored as int16 + ``BZERO = 32768``.
    """
    from astropy.io import fits

    primary = fits.Header()
    primary["NOISE"] = (float(noise), "per-pixel noise sigma, physical units")
    primary["SIMKIND"] = ("sky", "fitsae simulate --kind")
    primary["SIMSEED"] = (int(seed), "fitsae simulate --seed")
    for key, (value, comment) in (header or {}).items():
        primary[key] = (value, comment)
    hdus = [fits.PrimaryHDU(data, header=primary),
            fits.ImageHDU(np.asarray(truth, np.float32), name="TRUTH"),
            fits.ImageHDU(np.asarray(sigma, np.float32), name="SIGMA")]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def simulate_sky(n: int, size: int, out: Path, seed: int = 0, cube: bool = False, dtype: str = "float32",
                 knobs: SkyKnobs = SkyKnobs()) -> list[Path]:
    """Write ``n`` sky frames to ``out`` (``sky_NNNNN.fits``, or one ``sky_cube.fits`` whose
    header, shared by all planes, omits the per-frame drawn values and gives the mean ``NOISE``);
    frame ``i`` is drawn from a generator seeded by ``(seed, i)``."""
    fields = [sky_field(np.random.default_rng([seed, i]), size, knobs, dtype) for i in range(n)]
    if cube:
        return [write_sky_fits(out / "sky_cube.fits", np.stack([f.data for f in fields]),
                               np.stack([f.truth for f in fields]), np.stack([f.sigma for f in fields]),
                               float(np.mean([f.noise for f in fields])), seed)]
    return [write_sky_fits(out / f"sky_{i:05d}.fits", f.data, f.truth, f.sigma, f.noise, seed, f.header)
            for i, f in enumerate(fields)]

