"""The light of a simulated sky field: stars through the field's PSF, clusters, and galaxies.

Contract: :class:`PSFStamps` adds stars with exact pixel-integrated PSF cores at sub-pixel phases
(thousands per field: faint ones by one FFT convolution per phase when that is cheaper), and
:func:`galaxy_profile` / :func:`galaxy_stamp` draw unconvolved galaxies with GalSim, which the
caller convolves with the PSF once per field. All in electrons, before any detector effect
(:mod:`fitsae.data.sky`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PSFStamps", "add_stamp", "convolve", "king_radii", "galaxy_profile", "galaxy_stamp", "power_law"]

SUBPIXEL = 4  # star stamps at SUBPIXEL² offsets: positions within 1/8 pixel
CORE_HALF = 48  # the exact pixel-integrated core; beyond it wings are point-sampled
CORE_TIERS = (6, 12, 24, CORE_HALF)  # stamp half-sizes cut from the core, smallest that suffices
# Faint stars go in by FFT convolution when that is cheaper than adding stamps one by one
# (measured: a stamp costs as much as ~5000 of its pixels; the FFT path ~200 per pixel of its grid).
STAMP_COST, FFT_COST = 5000.0, 200.0
EDGE_TOLERANCE = 0.05  # a stamp is cut where the star's wing falls below this fraction of σ_sky
SERSIC_INDICES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)  # GalSim caches its Sérsic set-up per index


def power_law(rng, n, low, high, slope):
    """``n`` fluxes with N(>F) ∝ F^−slope between ``low`` and ``high`` (inverse CDF)."""
    u = rng.uniform(0.0, 1.0, n)
    a, b = low ** -slope, high ** -slope
    return (a - u * (a - b)) ** (-1.0 / slope)


class PSFStamps:
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
            add_stamp(image, stamp, int(iy[k]) - half, int(ix[k]) - half, float(flux[k]))

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


def add_stamp(image, stamp, y0, x0, weight):
    """``image[y0:, x0:] += weight · stamp`` where they overlap."""
    h, w = stamp.shape
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + h, image.shape[0]), min(x0 + w, image.shape[1])
    if ya < yb and xa < xb:
        image[ya:yb, xa:xb] += weight * stamp[ya - y0:yb - y0, xa - x0:xb - x0]


def convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear (not circular) convolution of ``image`` with an odd-sized ``kernel``, same shape."""
    shape = [a + b - 1 for a, b in zip(image.shape, kernel.shape, strict=True)]
    full = np.fft.irfft2(np.fft.rfft2(image, shape) * np.fft.rfft2(kernel, shape), shape)
    h = kernel.shape[0] // 2
    return full[h:h + image.shape[0], h:h + image.shape[1]]


def king_radii(rng, n, core, tidal):
    """Radii of ``n`` stars under King's (1962) surface density, by the tabulated inverse CDF."""
    r = np.linspace(0.0, tidal, 2048)
    density = (1 / np.sqrt(1 + (r / core) ** 2) - 1 / math.sqrt(1 + (tidal / core) ** 2)) ** 2
    cdf = np.cumsum(density * r)
    return np.interp(rng.uniform(0, cdf[-1], n), cdf, r)




def galaxy_profile(galsim, rng, morphology, flux, hlr):
    """One galaxy's intrinsic (unconvolved) profile, centred, ``hlr`` in arcsec."""
    angle = float(rng.uniform(0, math.pi)) * galsim.radians
    if morphology == "bulge_disk":
        bulge_fraction = float(rng.uniform(0.0, 0.8))
        disk = galsim.Exponential(half_light_radius=hlr).shear(q=float(rng.uniform(0.3, 1.0)), beta=angle)
        bulge = galsim.DeVaucouleurs(half_light_radius=hlr * float(rng.uniform(0.15, 0.6)))
        profile = bulge_fraction * bulge.shear(q=float(rng.uniform(0.6, 1.0)), beta=angle) + (1 - bulge_fraction) * disk
    elif morphology == "sersic":
        profile = galsim.Sersic(n=float(rng.choice(SERSIC_INDICES)), half_light_radius=hlr)
        profile = profile.shear(q=float(rng.uniform(0.4, 1.0)), beta=angle)
    elif morphology == "edge_on":  # a thin disk seen edge-on, with a small round bulge
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


def galaxy_stamp(profile, scale: float, hlr_pixels: float, half: int, dx: float, dy: float) -> np.ndarray:
    """Pixel-integrated stamp of an unconvolved profile (sum over m×m real-space samples per
    pixel, m up to 8 for galaxies smaller than a pixel), its centre at (dx, dy) from the middle pixel."""
    m = int(np.clip(2 ** math.ceil(math.log2(max(4.0 / hlr_pixels, 1.0))), 1, 8))
    fine = profile.drawImage(nx=m * (2 * half + 1), ny=m * (2 * half + 1), scale=scale / m, method="no_pixel",
                             offset=(m * dx, m * dy)).array
    return fine.reshape(2 * half + 1, m, 2 * half + 1, m).sum(axis=(1, 3))


