"""Decoding version-1 containers (``fitsae-latent-1``: float32 latents, written before the coder).

v1 stored the kept latent channels as raw float32 in one ``LATENT`` image HDU per plane and named
its model by run directory, checkpoint step and weight digest (``RUNDIR``, ``CKPTSTEP``,
``WDIGEST``). They still decode, to ``MU`` and ``SIGMA`` image HDUs as they always did, with the
run's checkpoint if it still exists.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from fitsae.codec.artifact import weights_digest
from fitsae.codec.container import FORMAT_V1 as FORMAT
from fitsae.codec.errors import CodecError
from fitsae.codec.load import load_checkpoint

__all__ = ["CompressedPlane", "decompress_file", "read_container"]

_BATCH = 256


@dataclass(frozen=True)
class CompressedPlane:
    """One encoded image plane: latents (η, rows, cols) float32 and what is needed to decode them."""

    latent: np.ndarray
    source: str
    hdu: int
    plane: int
    shape: tuple[int, int]
    offset: float
    scale: float
    n_filled: int

# --- geometry --------------------------------------------------------------------------------


def _from_tiles(tiles: np.ndarray, ny: int, nx: int) -> np.ndarray:
    th, tw = tiles.shape[1:3]
    return tiles.reshape(ny, nx, th, tw).transpose(0, 2, 1, 3).reshape(ny * th, nx * tw)


# --- model I/O ------------------------------------------------------------------------------


def _decode(model, z: np.ndarray, variance: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(μ, log σ²) (N, H, W) from latents whose last axis holds the first η channels.

    ``variance=False`` skips the variance decoder (log σ² is None): the budget's trial decodes
    need μ only.
    """
    import tensorflow as tf

    channels = int(model.latent_channels)
    full = np.zeros(z.shape[:-1] + (channels,), np.float32)
    full[..., : z.shape[-1]] = z  # the dropped channels are zero, exactly as the mask made them
    mus, log_vars = [], []
    for start in range(0, len(full), _BATCH):
        chunk = tf.convert_to_tensor(full[start:start + _BATCH])
        mus.append(np.asarray(model.decode_mean(chunk))[..., 0])
        if variance:
            log_vars.append(np.asarray(model.decode_var(chunk))[..., 0])
    mu = np.concatenate(mus).astype(np.float64)
    return mu, (np.concatenate(log_vars).astype(np.float64) if variance else None)


def decode_plane(model, data_cfg, plane: CompressedPlane, sigma: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(μ, σ) of one plane in physical units, cropped to the original size (σ None if not ``sigma``)."""
    from fitsae.data.normalize import denormalize, sigma_to_physical

    z = plane.latent.transpose(1, 2, 0)
    h, w = plane.shape
    if len(model.latent_shape(None, None)) == 1:  # dense: one latent vector per model-sized tile
        th, tw = model.image_shape[:2]
        ny, nx = z.shape[:2]
        mu_t, log_var_t = _decode(model, z.reshape(ny * nx, -1), variance=sigma)
        mu = _from_tiles(mu_t, ny, nx)
        log_var = _from_tiles(log_var_t, ny, nx) if sigma else None
    else:
        mu, log_var = _decode(model, z[None], variance=sigma)
        mu, log_var = mu[0], (log_var[0] if sigma else None)
    mu = mu[:h, :w]
    mu_phys = np.asarray(denormalize(mu, np.float64(plane.offset), np.float64(plane.scale), data_cfg), np.float64)
    if not sigma:
        return mu_phys.astype(np.float32), None
    sigma_phys = sigma_to_physical(np.exp(0.5 * log_var[:h, :w]), mu, plane.scale, data_cfg)
    return mu_phys.astype(np.float32), sigma_phys.astype(np.float32)


# --- container ------------------------------------------------------------------------------


def read_container(path) -> tuple[fits.Header, list[CompressedPlane]]:
    """The primary header and planes of a ``.fae.fits`` container; clear error if it is not one."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged files warn before they fail; the error below says it
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
        with hdul:
            header = hdul[0].header.copy()
            if header.get("FAEFMT") != FORMAT:
                raise CodecError(f"{path}: not a fitsae latent container (FAEFMT={header.get('FAEFMT')!r}, "
                                 f"expected {FORMAT!r})")
            planes = []
            for hdu in hdul[1:]:
                if hdu.name != "LATENT":
                    continue
                h = hdu.header
                latent = np.asarray(hdu.data, dtype=np.float32)
                kept = int(h.get("ETA", header["ETA"]))  # containers before budgets kept exactly ETA
                if latent.ndim != 3 or latent.shape[0] != kept or not 1 <= kept <= header["ETA"]:
                    raise CodecError(f"{path}, HDU LATENT {h.get('EXTVER')}: latent shape {latent.shape} does not "
                                     f"match its ETA={kept} within the budget ETA={header['ETA']}")
                planes.append(CompressedPlane(
                    latent=latent, source=h["SRCFILE"], hdu=int(h["SRCHDU"]), plane=int(h["SRCPLANE"]),
                    shape=(int(h["ORIGH"]), int(h["ORIGW"])), offset=float(h["OFFSET"]),
                    scale=float(h["SCALE"]), n_filled=int(h["NFILLED"]),
                ))
    except CodecError:
        raise
    except KeyError as err:
        raise CodecError(f"{path}: container header lacks {err}") from err
    except Exception as err:  # truncated data fail as OSError, ValueError (reshape), …: name the file
        raise CodecError(f"{path}: cannot read as a fitsae container: {err}") from err
    if len(planes) != header.get("NPLANES"):
        raise CodecError(f"{path}: has {len(planes)} LATENT HDUs, header says {header.get('NPLANES')}")
    return header, planes


def decompress_file(container, out, run_dir=None, checkpoint=None) -> dict:
    """Decode a container to a FITS file with ``MU`` and ``SIGMA`` image HDUs per plane.

    ``run_dir``/``checkpoint`` default to the run and step recorded in the container; the model's
    weight digest must match the one recorded at compression.
    """
    header, planes = read_container(container)
    run_dir = run_dir or header["RUNDIR"]
    checkpoint = checkpoint if checkpoint is not None else int(header["CKPTSTEP"])
    cfg, model, step = load_checkpoint(run_dir, checkpoint)
    digest = weights_digest(model)
    if digest != header["WDIGEST"]:
        raise CodecError(
            f"{container}: was compressed by a model with weight digest {header['WDIGEST'][:12]}… "
            f"(run {header['RUNDIR']}, step {header['CKPTSTEP']}); {run_dir} step {step} has {digest[:12]}… — "
            "decode with the same run and checkpoint"
        )
    if int(header["ETA"]) > int(model.latent_channels):
        raise CodecError(f"{container}: ETA={header['ETA']} exceeds the model's {model.latent_channels} channels")
    primary = fits.PrimaryHDU()
    for key in ("FAEFMT", "FAEVER", "MODKIND", "ETA", "ETASEL", "CKPTSTEP", "WDIGEST"):
        if key in header:
            primary.header[key] = header[key]
    hdus = [primary]
    for i, plane in enumerate(planes):
        mu, sigma = decode_plane(model, cfg.data, plane)
        for name, data, comment in (("MU", mu, "decoded mean, physical units"),
                                    ("SIGMA", sigma, "predicted 1-sigma uncertainty, physical units")):
            hdu = fits.ImageHDU(data, name=name, ver=i + 1)
            hdu.header["SRCFILE"] = plane.source
            hdu.header["SRCHDU"], hdu.header["SRCPLANE"] = plane.hdu, plane.plane
            hdu.header["ETA"] = (int(plane.latent.shape[0]), "latent channels decoded")
            hdu.header["CONTENT"] = comment
            hdus.append(hdu)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(out, overwrite=True)
    return {"container": str(container), "out": str(out), "planes": len(planes),
            "bits_per_pixel": 32.0 * sum(p.latent.size for p in planes)
            / sum(p.shape[0] * p.shape[1] for p in planes) if planes else math.nan}
