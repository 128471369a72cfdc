"""Simulated CCD frames that look like the sky: ``fitsae simulate --kind sky``.

A model trained on clean fields of a few galaxies fails on real frames: a crowded cluster, a
saturated star with its bleed trail, a hot column or an overscan strip each cost it hundreds of
σ. Every field here draws its own scene and detector from wide ranges (:class:`SkyKnobs`), so
a training set spans sparse to crowded, dark to bright sky, sharp to soft seeing, clean to
defect-ridden chips. The drawn values are recorded in each file's header.

The scene, in electrons: a sky level with a smooth gradient and vignetting; diffuse emission
(nebulosity, cirrus) as a log-normal Gaussian random field with a power-law spectrum; field
stars with a power-law luminosity function and, in some fields, a King-profile globular
cluster of thousands of stars; galaxies (bulge + disk, pure Sérsic, edge-on disks, irregular
clumpy ones). Stars and galaxies are convolved with the field's PSF (Moffat or Kolmogorov,
elliptical), drawn with GalSim. The detector then adds hot pixels, partial hot and dead
columns, cosmic-ray tracks, bleeds the charge above full well along columns, blanks the
prescan/overscan strips (bias and read noise only), converts to ADU with a bias and gain, draws
Poisson and read noise and clips at the saturation level.

Each field comes with its noiseless expected image (``TRUTH``, ADU, cosmic rays included: they
are charge deposited, not noise) and its true per-pixel noise σ (``SIGMA``, ADU:
√(expected electrons + read noise²)/gain, plus the 1/√12 ADU rounding of int16 output; only
the rounding at saturated pixels), so ``(data − TRUTH)/SIGMA`` is unit noise everywhere. The
primary header's ``NOISE`` is σ of the sky alone (``SKYLEVEL``).

GalSim draws the PSF once per field (in real space) and every galaxy unconvolved; stars are
numpy additions of PSF stamps at a grid of sub-pixel offsets (thousands of them: one FFT
convolution per offset) and the galaxies are convolved with the PSF by one FFT. A 256×256
frame costs about 0.1 CPU-second, a crowded one 0.3 (``benchmarks/simulate.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["SkyKnobs", "SkyField", "sky_field", "simulate_sky", "write_sky_fits", "knobs_from_strings"]

ADC_MAX = 65535.0
SUBPIXEL = 4  # star stamps at SUBPIXEL² offsets: positions within 1/8 pixel
CORE_HALF = 48  # the exact pixel-integrated core; beyond it wings are point-sampled
CORE_TIERS = (6, 12, 24, CORE_HALF)  # stamp half-sizes cut from the core, smallest that suffices
# Faint stars go in by FFT convolution when that is cheaper than adding stamps one by one
# (measured: a stamp costs as much as ~5000 of its pixels; the FFT path ~200 per pixel of its grid).
STAMP_COST, FFT_COST = 5000.0, 200.0
EDGE_TOLERANCE = 0.05  # a stamp is cut where the star's wing falls below this fraction of σ_sky
SERSIC_INDICES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)  # GalSim caches its Sérsic set-up per index
GALAXY_KINDS = ("bulge_disk", "sersic", "edge_on", "irregular")
_POSITIVE_KNOBS = ("pixel_scale", "psf_fwhm", "moffat_beta", "gain", "full_well", "star_flux", "galaxy_flux",
                   "galaxy_half_light_radius", "sky", "cosmic_ray_length", "cosmic_ray_charge",
                   "hot_pixel_charge", "cluster_core_radius", "diffuse_amplitude")
_COUNT_KNOBS = ("stars", "galaxies", "cluster_stars", "hot_pixel_fraction")  # log-uniform, or (0, 0)


@dataclass(frozen=True)
class SkyKnobs:
    """Ranges every field's scene and detector are drawn from (per field, from the seed).

    A pair ``(low, high)`` is drawn uniformly, or log-uniformly where marked (log); setting both
    ends equal fixes the value (``(0, 0)`` turns a count off). Probabilities are per field. Fluxes and levels are electrons
    unless they say ADU. Defaults span what the real frames we evaluate on show (a crowded
    cluster like M13, bright twilight to dark sky, undersampled to soft seeing).

    Attributes
    ----------
    pixel_scale : (float, float)
        Arcsec per pixel (log); sets the galaxies' size in pixels and how many fall in a field.
    psf_fwhm : (float, float)
        PSF FWHM in pixels (log): 1.3 is undersampled, 8 soft seeing.
    psf_kolmogorov_probability : float
        Chance the PSF is Kolmogorov (atmosphere-limited) instead of Moffat.
    moffat_beta : (float, float)
        Moffat β: 2 has broad wings, 5 is nearly Gaussian.
    psf_ellipticity : (float, float)
        PSF ellipticity |e| (tracking, optics), at a random angle.
    stars : (float, float)
        Field stars per 256×256 pixels (log), scaled with the area.
    star_flux : (float, float)
        Faintest and brightest star, electrons; the brightest is drawn log-uniformly from
        ``(star_flux[0]·100, star_flux[1])`` per field, so only some fields reach saturation.
    star_slope : (float, float)
        Luminosity-function slope α: N(>F) ∝ F^−α (0.5: many bright stars; 1: mostly faint).
    cluster_probability : float
        Chance the field holds a globular cluster.
    cluster_stars : (int, int)
        Cluster members (log), drawn from the same luminosity function.
    cluster_core_radius : (float, float)
        King core radius r_c in pixels (log).
    cluster_concentration : (float, float)
        log₁₀(r_t/r_c), tidal over core radius (M13: about 1.5).
    galaxies : (float, float)
        Galaxies per 256×256 pixels at 0.5″/pixel (log), scaled with the field's area on the sky.
    galaxy_kinds : (float, float, float, float)
        Relative weights of bulge + disk, pure Sérsic, edge-on and irregular (clumpy) galaxies.
    galaxy_flux : (float, float)
        Galaxy flux range, electrons, power law with slope 0.7 like the stars.
    galaxy_half_light_radius : (float, float)
        Half-light radius in arcsec (log).
    diffuse_probability : float
        Chance of diffuse emission (nebulosity, cirrus).
    diffuse_amplitude : (float, float)
        Its mean level in units of the sky noise σ (log).
    diffuse_spectral_index : (float, float)
        β of its power spectrum P(k) ∝ k^−β (cirrus: about 3).
    diffuse_contrast : (float, float)
        Width of the log-normal field (0.3: gentle haze, 1.5: knotty filaments).
    sky : (float, float)
        Sky level, electrons per pixel (log): dark narrow-band to bright twilight.
    gradient : (float, float)
        Linear sky gradient, fraction of the sky level across the frame, at a random angle.
    vignetting : (float, float)
        Quadratic fall-off towards the corners, fraction of the sky level.
    read_noise : (float, float)
        Read noise, electrons.
    gain : (float, float)
        Electrons per ADU (log).
    bias : (float, float)
        Bias level, ADU.
    full_well : (float, float)
        Full-well depth, electrons (log); charge above it bleeds along the column. The ADC also
        saturates at 65535 ADU, whichever comes first.
    cosmic_rays : (float, float)
        Cosmic-ray tracks per 256×256 pixels.
    cosmic_ray_length : (float, float)
        Track length, pixels (log).
    cosmic_ray_charge : (float, float)
        Charge per pixel of track, electrons (log).
    hot_pixel_fraction : (float, float)
        Fraction of hot pixels (log; 1e-6 is none in most 256×256 fields).
    hot_pixel_charge : (float, float)
        Their dark charge, electrons (log; above the full well they saturate and bleed).
    hot_columns : (int, int)
        Hot (partial) columns per field; their charge is drawn like the hot pixels', from the
        column's first bad row to the readout edge.
    dead_columns : (int, int)
        Dead (partial) columns per field: no charge, bias and read noise only.
    overscan_probability : float
        Chance of each strip: prescan columns on the left, overscan columns on the right,
        overscan rows at the top.
    overscan_width : (int, int)
        Width of each strip present, pixels.
    """

    pixel_scale: tuple[float, float] = (0.1, 1.0)
    psf_fwhm: tuple[float, float] = (1.3, 8.0)
    psf_kolmogorov_probability: float = 0.3
    moffat_beta: tuple[float, float] = (2.0, 5.0)
    psf_ellipticity: tuple[float, float] = (0.0, 0.15)
    stars: tuple[float, float] = (3.0, 2000.0)
    star_flux: tuple[float, float] = (30.0, 3e8)
    star_slope: tuple[float, float] = (0.5, 1.0)
    cluster_probability: float = 0.25
    cluster_stars: tuple[int, int] = (1000, 15000)
    cluster_core_radius: tuple[float, float] = (3.0, 40.0)
    cluster_concentration: tuple[float, float] = (0.8, 2.0)
    galaxies: tuple[float, float] = (0.5, 60.0)
    galaxy_kinds: tuple[float, float, float, float] = (0.4, 0.25, 0.15, 0.2)
    galaxy_flux: tuple[float, float] = (100.0, 1e7)
    galaxy_half_light_radius: tuple[float, float] = (0.2, 6.0)
    diffuse_probability: float = 0.4
    diffuse_amplitude: tuple[float, float] = (0.3, 100.0)
    diffuse_spectral_index: tuple[float, float] = (2.0, 4.0)
    diffuse_contrast: tuple[float, float] = (0.3, 1.5)
    sky: tuple[float, float] = (1.0, 1e4)
    gradient: tuple[float, float] = (0.0, 0.3)
    vignetting: tuple[float, float] = (0.0, 0.1)
    read_noise: tuple[float, float] = (2.0, 15.0)
    gain: tuple[float, float] = (0.5, 4.0)
    bias: tuple[float, float] = (100.0, 3000.0)
    full_well: tuple[float, float] = (3e4, 2e5)
    cosmic_rays: tuple[float, float] = (0.0, 40.0)
    cosmic_ray_length: tuple[float, float] = (1.0, 30.0)
    cosmic_ray_charge: tuple[float, float] = (300.0, 2e4)
    hot_pixel_fraction: tuple[float, float] = (1e-6, 1e-3)
    hot_pixel_charge: tuple[float, float] = (100.0, 3e5)
    hot_columns: tuple[int, int] = (0, 2)
    dead_columns: tuple[int, int] = (0, 2)
    overscan_probability: float = 0.3
    overscan_width: tuple[int, int] = (4, 24)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("probability"):
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"sky knob {f.name}={value}: a probability must be in [0, 1]")
            elif f.name == "galaxy_kinds":
                if len(value) != len(GALAXY_KINDS) or min(value) < 0 or sum(value) <= 0:
                    raise ValueError(f"sky knob galaxy_kinds={value}: four non-negative weights, not all 0")
            elif len(value) != 2 or value[0] > value[1] or value[0] < 0:
                raise ValueError(f"sky knob {f.name}={value}: need 0 <= low <= high")
        for name in _POSITIVE_KNOBS:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"sky knob {name}={getattr(self, name)}: must be positive")
        for name in _COUNT_KNOBS:
            low, high = getattr(self, name)
            if low <= 0 < high:
                raise ValueError(f"sky knob {name}={(low, high)}: drawn log-uniformly, so the low end "
                                 "must be positive (or both ends 0 for none)")
        if self.moffat_beta[0] <= 1.1:
            raise ValueError(f"sky knob moffat_beta={self.moffat_beta}: β must exceed 1.1 (finite flux)")


def knobs_from_strings(items: Sequence[str]) -> SkyKnobs:
    """:class:`SkyKnobs` from ``name=value`` strings (values in YAML: ``sky=[100,100]``), strictly."""
    import yaml

    from fitsae import config as fconfig

    mapping = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--knob {item!r}: expected name=value")
        try:
            mapping[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"--knob {item!r}: value is not valid YAML ({err})") from err
    try:
        return fconfig.from_dict(SkyKnobs, mapping, "knob")
    except fconfig.ConfigError as err:
        raise ValueError(str(err)) from err


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


def _power_law(rng, n, low, high, slope):
    """``n`` fluxes with N(>F) ∝ F^−slope between ``low`` and ``high`` (inverse CDF)."""
    u = rng.uniform(0.0, 1.0, n)
    a, b = low ** -slope, high ** -slope
    return (a - u * (a - b)) ** (-1.0 / slope)


class _PSF:
    """The field's PSF as numpy stamps: exact pixel-integrated cores at sub-pixel phases for
    stars, point-sampled wings for bright stars, and the kernel galaxies are convolved with.

    GalSim draws it in real space (``no_pixel``, fast for Moffat and Kolmogorov alike); the
    pixel integral is a sum over an 8×8 grid of samples per pixel, exact to far below the noise
    even for a 1.3-pixel FWHM. Stars are then numpy additions, so a cluster of 15 000 stars
    costs about as much as a few GalSim FFT draws.
    """

    def __init__(self, psf, scale: float, sky_sigma_e: float, field_size: int):
        self.psf, self.scale = psf, scale
        self.tolerance = EDGE_TOLERANCE * sky_sigma_e
        self.max_half = max(CORE_HALF, min(field_size, 256))
        n = 2 * self.max_half + 1
        self.sampled = psf.drawImage(nx=n, ny=n, scale=scale, method="no_pixel").array.astype(np.float64)
        yy, xx = np.indices(self.sampled.shape) - self.max_half
        radius = np.maximum(np.abs(yy), np.abs(xx)).ravel()
        # Brightest unit-flux value on each square ring, then the running maximum from outside
        # in: a stamp of half-size h leaves out at most flux·wing[h + 1] at its edge.
        ring = np.zeros(self.max_half + 2)
        np.maximum.at(ring, radius, self.sampled.ravel())
        self.wing = np.maximum.accumulate(ring[::-1])[::-1]
        self.cores = self._cores()
        self._wings: dict[tuple[int, int], np.ndarray] = {}

    def _cores(self) -> np.ndarray:
        """(SUBPIXEL, SUBPIXEL, 2·CORE_HALF+1, 2·CORE_HALF+1): pixel-integrated unit-flux stamps,
        [py, px] centred at offset ((p + ½)/SUBPIXEL − ½) pixel from the middle pixel."""
        m, nc = 2 * SUBPIXEL, 2 * CORE_HALF + 1
        fine = self.psf.drawImage(nx=m * (nc + 1), ny=m * (nc + 1), scale=self.scale / m, method="no_pixel").array
        # Fine sample k sits at (k − (M−1)/2)/m pixels from the centre (M = m(nc + 1)); pixel j of
        # the phase-p stamp is the sum of samples m·j + q + m − 2p − 1, q = 0..m−1.
        starts = [m - 2 * p - 1 for p in range(SUBPIXEL)]
        rows = np.stack([fine[a:a + m * nc].reshape(nc, m, -1).sum(axis=1) for a in starts])
        return np.stack([rows[:, :, a:a + m * nc].reshape(SUBPIXEL, nc, nc, m).sum(axis=3) for a in starts], axis=1)

    def half_size(self, flux: np.ndarray) -> np.ndarray:
        """Smallest half-size whose cut-off wing is below the tolerance (capped at ``max_half``)."""
        need = np.searchsorted(-self.wing[1:], -self.tolerance / np.maximum(flux, 1e-30), side="right")
        return np.minimum(need, self.max_half)

    def kernel(self, flux: float) -> np.ndarray:
        """Unit-sum PSF sampled at pixel centres, cut where a source of ``flux`` no longer shows."""
        half = int(self.half_size(np.array([flux]))[0])
        k = self.sampled[self.max_half - half:self.max_half + half + 1, self.max_half - half:self.max_half + half + 1]
        return k / k.sum()

    def _wing(self, py: int, px: int) -> np.ndarray:
        """The whole point-sampled stamp at phase (py, px), its core replaced by the exact one."""
        if (py, px) not in self._wings:
            n, offset = 2 * self.max_half + 1, [(p + 0.5) / SUBPIXEL - 0.5 for p in (px, py)]
            stamp = self.psf.drawImage(nx=n, ny=n, scale=self.scale, method="no_pixel", offset=offset).array
            core = slice(self.max_half - CORE_HALF, self.max_half + CORE_HALF + 1)
            stamp[core, core] = self.cores[py, px]
            self._wings[py, px] = stamp
        return self._wings[py, px]

    def add_stars(self, image: np.ndarray, x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> None:
        """Add stars at pixel coordinates ``x``, ``y`` (0-based centres) with ``flux`` electrons.

        Many faint stars (a cluster) go in at once: their fluxes are binned by sub-pixel phase
        and each bin is convolved with its core stamp by FFT, a cost that does not grow with
        their number. A few are added stamp by stamp, and bright ones always are. Either way
        each star's light is the same to within the stamp's cut-off tolerance.
        """
        halves = self.half_size(flux)
        tiers = np.searchsorted(CORE_TIERS, halves)
        ix, iy = np.floor(x + 0.5).astype(int), np.floor(y + 0.5).astype(int)
        px = np.clip(np.floor((x - ix + 0.5) * SUBPIXEL).astype(int), 0, SUBPIXEL - 1)
        py = np.clip(np.floor((y - iy + 0.5) * SUBPIXEL).astype(int), 0, SUBPIXEL - 1)
        in_core = tiers < len(CORE_TIERS)
        stamp_pixels = float(np.sum((2 * np.asarray(CORE_TIERS)[tiers[in_core]] + 1) ** 2))
        binned_pixels = (image.shape[0] + 4 * CORE_HALF) * (image.shape[1] + 4 * CORE_HALF)
        if STAMP_COST * np.count_nonzero(in_core) + stamp_pixels > FFT_COST * binned_pixels:
            self._add_binned(image, ix[in_core], iy[in_core], py[in_core] * SUBPIXEL + px[in_core], flux[in_core])
            one_by_one = np.flatnonzero(~in_core)
        else:
            one_by_one = np.arange(len(flux))
        for k in one_by_one.tolist():
            if tiers[k] < len(CORE_TIERS):
                half = CORE_TIERS[tiers[k]]
                cut = slice(CORE_HALF - half, CORE_HALF + half + 1)
                stamp = self.cores[py[k], px[k], cut, cut]
            else:  # a bright star whose wings reach beyond the core
                half = int(halves[k])
                cut = slice(self.max_half - half, self.max_half + half + 1)
                stamp = self._wing(py[k], px[k])[cut, cut]
            _add_stamp(image, stamp, int(iy[k]) - half, int(ix[k]) - half, float(flux[k]))

    def _add_binned(self, image, ix, iy, phase, flux):
        """Σ over phases of (fluxes binned on the pixel grid) ⊛ (that phase's core stamp)."""
        pad = CORE_HALF
        shape = (image.shape[0] + 2 * pad, image.shape[1] + 2 * pad)
        ok = (ix >= -pad) & (ix < image.shape[1] + pad) & (iy >= -pad) & (iy < image.shape[0] + pad)
        bins = np.zeros((SUBPIXEL * SUBPIXEL, *shape))
        np.add.at(bins, (phase[ok], iy[ok] + pad, ix[ok] + pad), flux[ok])
        nc = 2 * CORE_HALF + 1
        fft_shape = (shape[0] + nc - 1, shape[1] + nc - 1)
        total = 0.0
        for p in np.unique(phase[ok]):
            core = self.cores[p // SUBPIXEL, p % SUBPIXEL]
            total = total + np.fft.rfft2(bins[p], fft_shape) * np.fft.rfft2(core, fft_shape)
        full = np.fft.irfft2(total, fft_shape)
        image += full[2 * pad:2 * pad + image.shape[0], 2 * pad:2 * pad + image.shape[1]]


def _add_stamp(image, stamp, y0, x0, weight):
    """``image[y0:, x0:] += weight · stamp`` where they overlap."""
    h, w = stamp.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, image.shape[0]), min(x0 + w, image.shape[1])
    if ya < yb and xa < xb:
        image[ya:yb, xa:xb] += weight * stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear (not circular) convolution of ``image`` with an odd-sized ``kernel``, same shape."""
    shape = [a + b - 1 for a, b in zip(image.shape, kernel.shape, strict=True)]
    full = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(kernel, shape), shape)
    h = kernel.shape[0] // 2
    return full[h:h + image.shape[0], h:h + image.shape[1]]


def _king_radii(rng, n, core, tidal):
    """Radii of ``n`` stars under King's (1962) surface density, by the tabulated inverse CDF."""
    r = np.linspace(0.0, tidal, 2048)
    density = (1 / np.sqrt(1 + (r / core) ** 2) - 1 / math.sqrt(1 + (tidal / core) ** 2)) ** 2
    cdf = np.cumsum(density * r)
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, r)


def _gaussian_random_field(rng, size, index):
    """Unit-variance Gaussian random field with power spectrum ∝ k^−index."""
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.rfftfreq(size), indexing="ij"))
    k[0, 0] = np.inf  # no mean: the amplitude sets the level
    spectrum = np.fft.rfft2(rng.normal(size=(size, size))) * k ** (-index / 2)
    field = np.fft.irfft2(spectrum, s=(size, size))
    return field / field.std()


def _galaxy(galsim, rng, kind, flux, hlr):
    """One galaxy's intrinsic (unconvolved) profile, centred, ``hlr`` in arcsec."""
    angle = float(rng.uniform(0, math.pi)) * galsim.radians
    if kind == "bulge_disk":
        bulge_fraction = float(rng.uniform(0.0, 0.8))
        disk = galsim.Exponential(half_light_radius=hlr).shear(q=float(rng.uniform(0.3, 1.0)), beta=angle)
        bulge = galsim.DeVaucouleurs(half_light_radius=hlr * float(rng.uniform(0.15, 0.6)))
        profile = bulge_fraction * bulge.shear(q=float(rng.uniform(0.6, 1.0)), beta=angle) + (1 - bulge_fraction) * disk
    elif kind == "sersic":
        profile = galsim.Sersic(n=float(rng.choice(SERSIC_INDICES)), half_light_radius=hlr)
        profile = profile.shear(q=float(rng.uniform(0.4, 1.0)), beta=angle)
    elif kind == "edge_on":  # a thin disk seen edge-on, with a small round bulge
        disk = galsim.Exponential(half_light_radius=hlr).shear(q=float(rng.uniform(0.06, 0.2)), beta=angle)
        bulge_fraction = float(rng.uniform(0.0, 0.3))
        profile = bulge_fraction * galsim.DeVaucouleurs(half_light_radius=0.3 * hlr) + (1 - bulge_fraction) * disk
    else:  # irregular: star-forming clumps scattered over a faint disk
        n = int(rng.integers(4, 25))
        radius = rng.gamma(2.0, hlr / 1.68, n)  # an exponential disk's radial distribution
        phi = rng.uniform(0, 2 * math.pi, n)
        weights = rng.lognormal(0.0, 0.8, n)
        clumps = [galsim.Gaussian(sigma=float(hlr * rng.uniform(0.05, 0.2)), flux=float(w))
                  .shift(float(r * math.cos(p)), float(r * math.sin(p))) for r, p, w in zip(radius, phi, weights)]
        clump_fraction = float(rng.uniform(0.3, 0.8))
        disk = galsim.Exponential(half_light_radius=hlr).shear(q=float(rng.uniform(0.4, 1.0)), beta=angle)
        profile = clump_fraction / weights.sum() * galsim.Add(clumps) + (1 - clump_fraction) * disk
    return profile.withFlux(float(flux))


def _galaxy_stamp(profile, scale: float, hlr_pixels: float, half: int, dx: float, dy: float) -> np.ndarray:
    """Pixel-integrated stamp of an unconvolved profile (sum over m×m real-space samples per
    pixel, m up to 8 for galaxies smaller than a pixel), its centre at (dx, dy) from the middle pixel."""
    m = int(np.clip(2 ** math.ceil(math.log2(max(4.0 / hlr_pixels, 1.0))), 1, 8))
    fine = profile.drawImage(nx=m * (2 * half + 1), ny=m * (2 * half + 1), scale=scale / m, method="no_pixel",
                             offset=(m * dx, m * dy)).array
    return fine.reshape(2 * half + 1, m, 2 * half + 1, m).sum(axis=(1, 3))


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

    psf_stamps = _PSF(psf, pixel_scale, sky_sigma_e, size)
    slope = _uniform(rng, knobs.star_slope)
    brightest = _loguniform(rng, (min(knobs.star_flux[0] * 100, knobs.star_flux[1]), knobs.star_flux[1]))
    margin = min(32, size // 4)  # stars just outside the frame still throw light in
    n_field = int(rng.poisson(_loguniform(rng, knobs.stars) * area * ((size + 2 * margin) / size) ** 2))
    x, y = rng.uniform(-margin, size + margin, (2, n_field)) - 0.5
    stars = [(x, y, _power_law(rng, n_field, knobs.star_flux[0], brightest, slope))]
    n_cluster = 0
    if rng.uniform() < knobs.cluster_probability:
        n_cluster = int(round(_loguniform(rng, knobs.cluster_stars)))
        core = _loguniform(rng, knobs.cluster_core_radius)
        tidal = core * 10 ** _uniform(rng, knobs.cluster_concentration)
        cx, cy = rng.uniform(0.1 * size, 0.9 * size, 2)
        r = _king_radii(rng, n_cluster, core, tidal)
        phi = rng.uniform(0, 2 * math.pi, n_cluster)
        flux = _power_law(rng, n_cluster, knobs.star_flux[0], brightest, slope)
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
        kind = GALAXY_KINDS[int(rng.choice(len(GALAXY_KINDS), p=weights))]
        flux = float(_power_law(rng, 1, knobs.galaxy_flux[0], knobs.galaxy_flux[1], 0.7)[0])
        hlr = _loguniform(rng, knobs.galaxy_half_light_radius)
        gx, gy = rng.uniform(0, size, 2) - 0.5
        half = int(min(size, max(4, 5 * hlr / pixel_scale)))
        stamp = _galaxy_stamp(_galaxy(galsim, rng, kind, flux, hlr), pixel_scale, hlr / pixel_scale, half,
                              float(gx - round(gx)), float(gy - round(gy)))
        _add_stamp(galaxies, stamp, int(round(gy)) - half, int(round(gx)) - half, 1.0)
        brightest_galaxy = max(brightest_galaxy, flux)
    if n_galaxies:
        electrons += _convolve(galaxies, psf_stamps.kernel(brightest_galaxy))
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
