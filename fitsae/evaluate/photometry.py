"""Aperture photometry of the original and the reconstruction: the flux error astronomers ask first.

Sources are detected once on the original (``sep``, SExtractor's algorithms as a library); the
same circular apertures, at the same positions, are then summed on the original, on each
reconstruction and, where it exists, on the noiseless truth, after subtracting one and the same
background map (the original's). With the background fixed, aperture photometry is linear in
the image, so the flux difference is exactly the codec's change summed over the aperture: a
background re-estimated on a denoised reconstruction would shift by a fraction of σ and move
every flux by that times the aperture area, which is the estimator's change, not the codec's.

Apertures that cross the frame edge are left out, so every flux counts the same pixels on
every image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Sources", "FluxErrors", "detect_sources", "aperture_fluxes", "flux_errors"]

_APER_TRUNC = 0x0010  # sep.APER_TRUNC: the aperture crosses the image edge


def _as_sep(array) -> np.ndarray:
    """sep wants C-contiguous, native-endian float64."""
    return np.ascontiguousarray(array, dtype=np.float64)


@dataclass(frozen=True)
class Sources:
    """Sources detected on an original image and their apertures.

    Attributes
    ----------
    x, y : ndarray
        Aperture centres, 0-based pixel coordinates (column, row).
    radius : float
        Aperture radius, pixels (one for all sources).
    flux, flux_err : ndarray
        Background-subtracted aperture flux on the original and its 1σ error.
    background : ndarray
        The background map subtracted from every image measured with these sources.
    sigma : ndarray
        Per-pixel noise σ the errors and detection used.
    n_detected : int
        Everything ``sep`` found, before apertures crossing the edge were dropped.
    """

    x: np.ndarray
    y: np.ndarray
    radius: float
    flux: np.ndarray
    flux_err: np.ndarray
    background: np.ndarray
    sigma: np.ndarray
    n_detected: int

    @property
    def snr(self) -> np.ndarray:
        """Aperture signal-to-noise ratio on the original."""
        return self.flux / self.flux_err


@dataclass(frozen=True)
class FluxErrors:
    """Relative aperture-flux errors of a reconstruction against a reference.

    Attributes
    ----------
    median_abs_relative_error : float
        Median of |F_rec − F_ref| / |F_ref| over the sources used (NaN when none).
    median_relative_error : float
        Median of (F_rec − F_ref) / F_ref: the bias, signed.
    n_sources : int
        Sources with whole apertures inside the frame.
    n_used : int
        Of those, the ones at or above the SNR cut.
    relative_errors : ndarray
        (F_rec − F_ref) / F_ref of each source used.
    """

    median_abs_relative_error: float
    median_relative_error: float
    n_sources: int
    n_used: int
    relative_errors: np.ndarray

    def as_dict(self) -> dict:
        return {"median_abs_relative_error": self.median_abs_relative_error,
                "median_relative_error": self.median_relative_error,
                "n_sources": self.n_sources, "n_used": self.n_used}


def detect_sources(original, sigma=None, *, threshold: float = 5.0, min_area: int = 5,
                   radius: float | None = None, background_box: int = 64) -> Sources:
    """Detect sources on ``original`` and measure their aperture fluxes on it.

    Parameters
    ----------
    original : 2-D array
        The image as stored (physical units).
    sigma : float or 2-D array, optional
        Per-pixel noise σ (e.g. a simulation's ``SIGMA`` map). Default: the background RMS map
        ``sep`` estimates.
    threshold : float
        Detection threshold, in σ per pixel.
    min_area : int
        Fewest connected pixels above the threshold that make a source.
    radius : float, optional
        Aperture radius in pixels. Default: twice the median half-light radius of the sources
        detected, at least 1.5 pixels, so the apertures follow the seeing of the image.
    background_box : int
        Mesh size of ``sep``'s background map (clipped to the image side).

    Raises
    ------
    ValueError
        Not a finite 2-D image, or ``sigma`` not positive where it is used.
    """
    import sep

    image = _as_sep(original)
    if image.ndim != 2:
        raise ValueError(f"photometry needs a 2-D image, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("photometry needs a finite image (no NaN/Inf)")
    box = int(max(8, min(background_box, *image.shape)))
    background = sep.Background(image, bw=box, bh=box, fw=3, fh=3)
    sigma_map = background.rms() if sigma is None else np.broadcast_to(_as_sep(sigma), image.shape).copy()
    if np.any(sigma_map <= 0):
        raise ValueError("photometry needs sigma > 0 everywhere (saturated pixels have sigma 0: "
                         "pass a floor, e.g. np.maximum(sigma, 1))")
    background_map = background.back()
    residual = image - background_map
    sep.set_extract_pixstack(max(300_000, 2 * image.size))
    sep.set_sub_object_limit(4096)
    objects = sep.extract(residual, threshold, err=sigma_map, minarea=min_area)
    x, y = objects["x"], objects["y"]
    if radius is None:
        if len(x):
            half_light, _ = sep.flux_radius(residual, x, y, 6.0 * np.sqrt(objects["a"] * objects["b"]) + 1, 0.5,
                                            normflux=objects["flux"], subpix=5)
            finite = half_light[np.isfinite(half_light) & (half_light > 0)]
            radius = max(1.5, 2.0 * float(np.median(finite))) if len(finite) else 1.5
        else:
            radius = 1.5
    flux, flux_err, flag = sep.sum_circle(residual, x, y, radius, err=sigma_map, subpix=0)
    whole = (flag & _APER_TRUNC) == 0
    return Sources(x=x[whole], y=y[whole], radius=float(radius), flux=flux[whole], flux_err=flux_err[whole],
                   background=background_map, sigma=sigma_map, n_detected=len(x))


def aperture_fluxes(sources: Sources, image) -> np.ndarray:
    """Flux of ``image`` in the apertures of ``sources``, after subtracting their background map."""
    import sep

    image = _as_sep(image)
    if image.shape != sources.background.shape:
        raise ValueError(f"image shape {image.shape} differs from the detection image's {sources.background.shape}")
    flux, _, _ = sep.sum_circle(image - sources.background, sources.x, sources.y, sources.radius, subpix=0)
    return flux


def flux_errors(sources: Sources, reconstruction, reference=None, *, snr_min: float = 20.0) -> FluxErrors:
    """Relative aperture-flux error of ``reconstruction`` for sources of SNR ≥ ``snr_min``.

    Parameters
    ----------
    sources : Sources
        From :func:`detect_sources` on the original.
    reconstruction : 2-D array
        The decoded image, same shape and units as the original.
    reference : 2-D array, optional
        What the reconstruction's fluxes are compared with: the original by default, or the
        noiseless truth of a simulation.
    snr_min : float
        SNR cut, measured on the original (the issue's figure: 20).
    """
    ref_flux = sources.flux if reference is None else aperture_fluxes(sources, reference)
    use = sources.snr >= snr_min
    return _summary(aperture_fluxes(sources, reconstruction)[use], ref_flux[use], len(sources.x))


def _summary(flux, ref_flux, n_sources) -> FluxErrors:
    relative = (flux - ref_flux) / ref_flux
    if not len(relative):
        return FluxErrors(math.nan, math.nan, n_sources, 0, relative)
    return FluxErrors(float(np.median(np.abs(relative))), float(np.median(relative)), n_sources,
                      len(relative), relative)
