"""The ranges a simulated sky field draws its scene and detector from: :class:`SkyKnobs`.

Contract: every knob is a (low, high) range (a single value when low = high); counts and scales
are drawn log-uniformly, so a training set spans sparse to crowded, dark to bright sky, sharp to
soft seeing, clean to defect-ridden chips. ``fitsae simulate --kind sky --knob name=[lo,hi]`` and
YAML files change them (:func:`knobs_from_strings`), validated strictly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

__all__ = ["SkyKnobs", "knobs_from_strings", "GALAXY_KINDS"]

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
            mapping[key.strip()] = fconfig.parse_yaml(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"--knob {item!r}: value is not valid YAML ({err})") from err
    try:
        return fconfig.from_dict(SkyKnobs, mapping, "knob")
    except fconfig.ConfigError as err:
        raise ValueError(str(err)) from err


