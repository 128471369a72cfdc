"""Simulated FITS data sets: toy fields, GalSim fields, sky frames, digits and MNIST cubes.

Contract: deterministic in ``seed`` (image ``i`` is drawn from a generator seeded by
``(seed, i)``, so a cube holds the same planes as the separate files would). Every file carries
``NOISE``, the per-pixel noise σ in physical units (``1/√12`` for noiseless integer data). Toy,
GalSim and sky fields also carry image extensions ``TRUTH`` (the noiseless field; for int16
output the expected ADU) and ``SIGMA`` (the true per-pixel σ), float32, in the primary's
physical units, right after the image they describe; ``fitsae index`` reads them as auxiliary
planes of that image (:mod:`fitsae.io.scan`). :func:`simulate` says what each kind draws.

Why: simulated data are the only ones with a known truth and noise, which the index-time noise
estimate and every "against the truth" figure of ``fitsae evaluate`` are checked on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fitsae.data.sky import SkyKnobs, simulate_sky

__all__ = ["KINDS", "Field", "simulate", "toy_field", "galsim_field", "write_fits", "TRUTH_EXTNAME",
           "SIGMA_EXTNAME"]

KINDS = ("toy", "galsim", "sky", "digits", "mnist")
QUANTIZATION_SIGMA = 1 / math.sqrt(12)
SERSIC_INDICES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
# Extension names of the auxiliary planes; fitsae.io.scan spells them the same way.
TRUTH_EXTNAME = "TRUTH"
SIGMA_EXTNAME = "SIGMA"


class Field(NamedTuple):
    """One simulated image with what the simulator knows about it (all float32 but ``image``).

    ``image`` is what a camera would record; ``truth`` its noiseless expectation; ``sigma`` the
    true per-pixel noise σ; ``noise`` the background σ written as the ``NOISE`` keyword.
    """

    image: np.ndarray
    truth: np.ndarray
    sigma: np.ndarray
    noise: float


def toy_field(rng: np.random.Generator, size: int, noise: float = 1.0, background: float = 10.0) -> Field:
    """Gaussian blobs on a noisy flat background (float32, σ = ``noise`` everywhere)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    truth = np.full((size, size), background, np.float32)
    for _ in range(rng.poisson(max(1.0, size * size / 2048))):
        y, x = rng.uniform(0, size, 2)
        width = rng.uniform(1.0, max(1.5, size / 32))
        amplitude = noise * rng.lognormal(math.log(20), 1.0)
        truth += (amplitude * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * width ** 2))).astype(np.float32)
    image = truth + rng.normal(0, noise, (size, size)).astype(np.float32)
    return Field(image, truth, np.full((size, size), noise, np.float32), float(noise))


def galsim_field(rng: np.random.Generator, size: int, sky: float = 200.0, read_noise: float = 5.0,
                 pixel_scale: float = 0.2) -> Field:
    """A GalSim sky field in ADU (gain 1); background noise σ = √(sky + read_noise²).

    With gain 1 the variance of a pixel is its expected count (Poisson) plus the read noise²,
    so the true σ map is √(max(truth, 0) + read_noise²).
    """
    import galsim

    seed = int(rng.integers(1, 2 ** 31 - 1))
    grng = galsim.BaseDeviate(seed)
    image = galsim.ImageF(size, size, scale=pixel_scale)
    psf = galsim.Moffat(beta=3.0, fwhm=float(rng.uniform(0.6, 1.0)))
    area = (size * pixel_scale / 60.0) ** 2  # arcmin²
    for _ in range(rng.poisson(60 * area) + 1):
        # GalSim caches its (costly) Sérsic setup per index; a few indices keep a field at ~0.1 s.
        n = float(rng.choice(SERSIC_INDICES))
        galaxy = galsim.Sersic(n=n, half_light_radius=float(rng.lognormal(math.log(0.6), 0.4)),
                               flux=float(rng.lognormal(math.log(3e3), 1.0)))
        e = rng.uniform(0, 0.6)
        galaxy = galaxy.shear(e=float(e), beta=float(rng.uniform(0, math.pi)) * galsim.radians)
        _draw(galsim.Convolve(galaxy, psf), image, rng, size)
    for _ in range(rng.poisson(20 * area) + 1):
        _draw(psf.withFlux(float(rng.lognormal(math.log(2e4), 1.2))), image, rng, size)
    image += sky
    truth = image.array.astype(np.float32)  # a copy: addNoise below works in place
    image.addNoise(galsim.CCDNoise(grng, gain=1.0, read_noise=read_noise))
    sigma = np.sqrt(np.maximum(truth.astype(np.float64), 0.0) + read_noise ** 2).astype(np.float32)
    return Field(image.array.astype(np.float32), truth, sigma, math.sqrt(sky + read_noise ** 2))


def _draw(profile, image, rng, size):
    import galsim

    x, y = rng.uniform(0.5, size + 0.5, 2)
    stamp = profile.drawImage(nx=64, ny=64, scale=image.scale, method="auto",
                              center=galsim.PositionD(float(x), float(y)))
    bounds = stamp.bounds & image.bounds
    if bounds.isDefined():
        image[bounds] += stamp[bounds]


def write_fits(path: Path, data: np.ndarray, noise: float, kind: str, seed: int, extra=None,
               truth: np.ndarray | None = None, sigma: np.ndarray | None = None) -> Path:
    """Write one simulated FITS file; every simulator writes through here.

    Parameters
    ----------
    path : Path
        The file to write (overwritten).
    data : array, 2-D image or 3-D cube
        The primary HDU's pixels; uint16 data are stored as int16 + ``BZERO = 32768``.
    noise : float
        The background noise σ in physical units, written as the ``NOISE`` keyword.
    kind, seed : str, int
        Recorded as ``SIMKIND`` / ``SIMSEED``.
    extra : astropy HDU, optional
        Appended last (e.g. a ``LABELS`` table).
    truth, sigma : array of ``data``'s shape, optional
        The noiseless image and the true per-pixel noise σ, in the physical units of ``data``;
        written as float32 image extensions ``TRUTH`` and ``SIGMA`` right after the primary, which
        is how ``fitsae index`` knows whose planes they are.
    """
    from astropy.io import fits

    header = fits.Header()
    header["NOISE"] = (float(noise), "per-pixel noise sigma, physical units")
    header["SIMKIND"] = (kind, "fitsae simulate --kind")
    header["SIMSEED"] = (int(seed), "fitsae simulate --seed")
    hdus = [fits.PrimaryHDU(data, header=header)]  # astropy stores uint16 as int16 + BZERO=32768
    for name, plane, what in ((TRUTH_EXTNAME, truth, "noiseless image, physical units of HDU 0"),
                              (SIGMA_EXTNAME, sigma, "true per-pixel noise sigma, physical units of HDU 0")):
        if plane is None:
            continue
        plane = np.asarray(plane, np.float32)
        if plane.shape != np.shape(data):
            raise ValueError(f"{path}: {name} has shape {plane.shape}, the image {np.shape(data)}")
        hdu = fits.ImageHDU(plane, name=name)
        hdu.header["COMMENT"] = what
        hdus.append(hdu)
    if extra is not None:
        hdus.append(extra)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def _digits(n: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    if n > len(digits.images):
        raise ValueError(f"--n {n}: scikit-learn has only {len(digits.images)} digits")
    return digits.images[:n].astype(np.uint8), digits.target[:n]


def _mnist(n: int, mnist_path: str | None):
    if not mnist_path:
        # Keras' download cache, read as a file: fitsae never reaches the network at run time.
        cached = Path.home() / ".keras" / "datasets" / "mnist.npz"
        if not cached.is_file():
            raise ValueError(f"MNIST: no --mnist PATH/TO/mnist.npz given and none at {cached}")
        mnist_path = str(cached)
    try:
        with np.load(mnist_path, allow_pickle=False) as f:
            images, labels = f["x_train"], f["y_train"]
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{mnist_path}: not a readable mnist.npz with x_train/y_train ({err})") from err
    if n > len(images):
        raise ValueError(f"--n {n}: MNIST has only {len(images)} training images")
    return np.asarray(images[:n], np.uint8), np.asarray(labels[:n])


def _labels_hdu(labels):
    from astropy.io import fits

    return fits.BinTableHDU.from_columns([fits.Column(name="LABEL", format="J", array=labels)], name="LABELS")


def simulate(scene: str, n: int, size: int, out: str | Path, seed: int = 0, cube: bool = False,
             dtype: str = "float32", mnist_path: str | None = None, knobs: SkyKnobs | None = None) -> list[Path]:
    """Write ``n`` simulated images to directory ``out``; returns the files written.

    Parameters
    ----------
    scene : {"toy", "galsim", "sky", "digits", "mnist"}
        What to simulate (``fitsae simulate --kind``): ``toy``, the seed notebooks' Gaussian
        blobs of random position, width and amplitude on a flat background with noise σ = 1;
        ``galsim``, Sérsic galaxies and stars convolved with a Moffat PSF on a sky level, with
        Poisson and read noise (gain 1 e⁻/ADU); ``sky``, CCD frames drawn from a wide prior of
        scenes and detectors (:mod:`fitsae.data.sky`); ``digits``, scikit-learn's bundled 8×8
        digits (0..16) as one uint8 cube with a ``LABELS`` table; ``mnist``, 28×28 MNIST digits
        (0..255) likewise, from a local ``mnist.npz`` (keras' download cache without a path; never the network).
    n : int
        Number of images (planes, for cubes).
    size : int
        Image side for toy/galsim (digits are 8, MNIST 28).
    cube : bool
        toy/galsim/sky: one ``KIND_cube.fits`` with ``n`` planes instead of ``n`` files (digits and
        MNIST are always cubes).
    dtype : {"float32", "int16"}
        galsim/sky pixel storage; ``int16`` writes unsigned ADU as int16 + ``BZERO = 32768``
        (unsigned 16-bit ADU, like most CCD cameras).
    mnist_path : str, optional
        Local ``mnist.npz`` (keys ``x_train``, ``y_train``).
    knobs : fitsae.data.sky.SkyKnobs, optional
        sky: the ranges fields are drawn from (default: ``SkyKnobs()``).
    """
    if scene not in KINDS:
        raise ValueError(f"unknown --kind {scene!r}; choose from {', '.join(KINDS)}")
    if n < 1:
        raise ValueError(f"--n {n}: need at least one image")
    if dtype not in ("float32", "int16"):
        raise ValueError(f"--dtype {dtype!r}: choose float32 or int16")
    if knobs is not None and scene != "sky":
        raise ValueError(f"--knob applies to --kind sky, not {scene}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if scene in ("digits", "mnist"):
        images, labels = _digits(n) if scene == "digits" else _mnist(n, mnist_path)
        return [write_fits(out / f"{scene}.fits", images, QUANTIZATION_SIGMA, scene, seed, _labels_hdu(labels))]
    if size < 4:
        raise ValueError(f"--size {size}: images must be at least 4x4")
    if scene == "sky":
        return simulate_sky(n, size, out, seed, cube, dtype, knobs or SkyKnobs())
    fields = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        field = toy_field(rng, size) if scene == "toy" else galsim_field(rng, size)
        if scene == "galsim" and dtype == "int16":
            # Rounding adds its own σ² = 1/12 to the noise; the truth stays the expected count.
            image = np.clip(np.rint(field.image), 0, 65535).astype(np.uint16)
            sigma = np.sqrt(field.sigma.astype(np.float64) ** 2 + QUANTIZATION_SIGMA ** 2)
            field = field._replace(image=image, sigma=sigma.astype(np.float32))
        fields.append(field)
    if cube:
        return [write_fits(out / f"{scene}_cube.fits", np.stack([f.image for f in fields]),
                           float(np.mean([f.noise for f in fields])), scene, seed,
                           truth=np.stack([f.truth for f in fields]), sigma=np.stack([f.sigma for f in fields]))]
    return [write_fits(out / f"{scene}_{i:05d}.fits", f.image, f.noise, scene, seed, truth=f.truth, sigma=f.sigma)
            for i, f in enumerate(fields)]
