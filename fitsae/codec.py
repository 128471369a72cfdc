"""Compress FITS images to autoencoder latents at a chosen η, and decode them back to μ and σ.

The container is itself a FITS file (``*.fae.fits``), so it can be inspected with any FITS tool
and archived next to the data it came from. Layout:

- primary HDU, no data; header: ``FAEFMT`` (format tag), ``FAEVER``, the model (``MODKIND``,
  ``LATCH`` = C, ``STRIDE``, ``TILEH``/``TILEW`` for dense models), the rate ``ETA``, the run
  (``RUNDIR``, ``CKPTSTEP``, ``WDIGEST`` = SHA-256 of the weights, checked on decode so latents are
  never decoded by a different model), and the normalization (``NORM``, ``ASINHA``);
- one image HDU ``LATENT`` per image plane, float32 of shape (η, rows, cols): for a conv model the
  latent grid of the whole (stride-padded) plane, for a dense model one latent vector per
  model-sized tile. Its header holds where the plane came from (``SRCFILE``, ``SRCHDU``,
  ``SRCPLANE``), its size (``ORIGH``, ``ORIGW``), and the normalization parameters (``OFFSET``,
  ``SCALE``: physical = denormalize(x, OFFSET, SCALE)); ``NFILLED`` counts NaN/BLANK pixels that
  were filled with the background before encoding (their decoded values are estimates).

η is a budget (:mod:`fitsae.budget`): by default each plane keeps the first η′ ≤ η channels
whose decoded μ is closest to the image (``ETA`` in the ``LATENT`` header; the primary ``ETA``
is the budget, ``ETASEL`` says ``best`` or ``fixed``), so more budget never gives a worse plane;
``select="fixed"`` keeps exactly η. The channels are stored as 32-bit floats: the payload is
``32·η′·positions`` bits per plane (no entropy coding yet). Decoding zero-fills the dropped
channels — exactly the masking the model was trained with — and writes ``MU`` and ``SIGMA`` image
HDUs in physical units. σ is the variance decoder's prediction mapped to physical units; for
``asinh`` normalization it is propagated to first order (σ_phys = σ·scale·cosh(μ/a)).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from astropy.io import fits

from fitsae import __version__
from fitsae.budget import RunningBest, candidates

__all__ = ["CodecError", "FORMAT", "SELECTIONS", "CompressedPlane", "weights_digest", "compress_files",
           "decompress_file", "read_container"]

FORMAT = "fitsae-latent-1"
_BATCH = 256


class CodecError(ValueError):
    """An input, container or model the codec cannot use; the message names it and says why."""


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

    @property
    def bits_per_pixel(self) -> float:
        return 32.0 * self.latent.size / (self.shape[0] * self.shape[1])


def weights_digest(model) -> str:
    """SHA-256 of every weight of ``model`` in order: identifies the exact decoder a container needs."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(np.ascontiguousarray(np.asarray(variable.numpy())).tobytes())
    return digest.hexdigest()


# --- geometry --------------------------------------------------------------------------------


def _pad_to(image: np.ndarray, multiple_h: int, multiple_w: int) -> np.ndarray:
    h, w = image.shape
    ph, pw = (-h) % multiple_h, (-w) % multiple_w
    if not ph and not pw:
        return image
    # Mirrored padding continues the sky smoothly, so the padded border does not inject edges
    # the encoder would spend latent values on.
    return np.pad(image, ((0, ph), (0, pw)), mode="symmetric")


def _to_tiles(image: np.ndarray, th: int, tw: int) -> np.ndarray:
    h, w = image.shape
    return image.reshape(h // th, th, w // tw, tw).transpose(0, 2, 1, 3).reshape(-1, th, tw)


def _from_tiles(tiles: np.ndarray, ny: int, nx: int) -> np.ndarray:
    th, tw = tiles.shape[1:3]
    return tiles.reshape(ny, nx, th, tw).transpose(0, 2, 1, 3).reshape(ny * th, nx * tw)


# --- model I/O ------------------------------------------------------------------------------


def _encode(model, x: np.ndarray, eta: int) -> np.ndarray:
    """Latents of normalized images x (N, H, W) at rate η, first η channels only, float32."""
    import tensorflow as tf

    out = []
    for start in range(0, len(x), _BATCH):
        chunk = tf.convert_to_tensor(x[start:start + _BATCH, ..., None], tf.float32)
        z = model.encode(chunk, tf.fill([tf.shape(chunk)[0]], tf.constant(eta, tf.int32)))
        out.append(np.asarray(z)[..., :eta])
    return np.concatenate(out).astype(np.float32)


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


def _read_plane(row) -> np.ndarray:
    from fitsae.io.read import read_plane_astropy

    # Opened and closed here rather than through the pipeline's cache of open files: a
    # compression job touches each file once, and must not hold it open afterwards.
    try:
        with fits.open(row.path, memmap=False) as hdul:
            return np.asarray(read_plane_astropy(hdul, row.hdu, row.plane, row.naxis), dtype=np.float64)
    except Exception as err:  # astropy raises many types for damaged files; name the input
        raise CodecError(f"{row.path}, HDU {row.hdu}, plane {row.plane}: cannot read pixels: {err}") from err


SELECTIONS = ("best", "fixed")


def encode_plane(model, data_cfg, row, eta: int, select: str = "best") -> CompressedPlane:
    """Encode one manifest row (an image plane) within the budget of ``eta`` channels.

    ``select="best"`` keeps the first η′ ≤ η channels whose decoded μ has the smallest squared
    error on the measured pixels (:mod:`fitsae.budget`); ``"fixed"`` keeps exactly η.
    """
    from fitsae.data.normalize import image_parameters, normalize

    pixels = _read_plane(row)
    bad = ~np.isfinite(pixels)
    pixels = np.where(bad, row.offset, pixels)  # background where nothing was measured
    offset, scale, _ = image_parameters(row.offset, row.noise, data_cfg.normalization)
    import tensorflow as tf

    x = np.asarray(normalize(tf.constant(pixels, tf.float32), offset, scale, data_cfg), dtype=np.float32)
    if model.model_config.kind == "dense":
        th, tw = model.image_shape[:2]
        padded = _pad_to(x, th, tw)
        ny, nx = padded.shape[0] // th, padded.shape[1] // tw
        z = _encode(model, _to_tiles(padded, th, tw), eta).reshape(ny, nx, eta)
    else:
        padded = _pad_to(x, model.stride, model.stride)
        z = _encode(model, padded[None], eta)[0]
    plane = CompressedPlane(
        latent=np.ascontiguousarray(z.transpose(2, 0, 1)), source=row.path, hdu=row.hdu, plane=row.plane,
        shape=(row.height, row.width), offset=float(offset), scale=float(scale), n_filled=int(bad.sum()),
    )
    if select == "fixed":
        return plane
    best = RunningBest()
    measured = ~bad
    for kept in candidates(eta, model.latent_channels):
        candidate = replace(plane, latent=plane.latent[:kept])
        mu, _ = decode_plane(model, data_cfg, candidate, sigma=False)
        best.offer(kept, [np.sum((pixels[measured] - mu[measured].astype(np.float64)) ** 2)])
    return replace(plane, latent=np.ascontiguousarray(plane.latent[: int(best.eta[0])]))


def decode_plane(model, data_cfg, plane: CompressedPlane, sigma: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(μ, σ) of one plane in physical units, cropped to the original size (σ None if not ``sigma``)."""
    from fitsae.data.normalize import denormalize

    z = plane.latent.transpose(1, 2, 0)
    h, w = plane.shape
    if model.model_config.kind == "dense":
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
    sigma_phys = np.exp(0.5 * log_var[:h, :w]) * plane.scale
    if data_cfg.normalization == "asinh":
        sigma_phys = sigma_phys * np.cosh(mu / data_cfg.asinh_softening)
    return mu_phys.astype(np.float32), sigma_phys.astype(np.float32)


# --- container ------------------------------------------------------------------------------


def _primary_header(cfg, model, run_dir, step: int, eta: int, select: str, n_planes: int) -> fits.Header:
    header = fits.Header()
    header["FAEFMT"] = (FORMAT, "fitsae latent container format")
    header["FAEVER"] = (__version__, "fitsae version that wrote it")
    header["MODKIND"] = (model.model_config.kind, "dense or conv")
    header["LATCH"] = (int(model.latent_channels), "latent channels C of the model")
    header["STRIDE"] = (int(model.stride), "total encoder stride")
    if model.model_config.kind == "dense":
        header["TILEH"], header["TILEW"] = (int(v) for v in model.image_shape[:2])
    header["ETA"] = (int(eta), "budget: most latent channels a plane keeps")
    header["ETASEL"] = (select, "best: each plane keeps its best eta' <= ETA")
    header["NORM"] = (cfg.data.normalization, "data.normalization")
    header["ASINHA"] = (float(cfg.data.asinh_softening), "data.asinh_softening")
    header["CKPTSTEP"] = (int(step), "checkpoint step of the model")
    header["WDIGEST"] = weights_digest(model)  # SHA-256 of the weights (no room left for a comment)
    header["NPLANES"] = (int(n_planes), "LATENT HDUs that follow")
    # Paths go without a comment: a long one then uses the CONTINUE convention cleanly instead
    # of astropy truncating (and warning about) the comment.
    header["RUNDIR"] = str(Path(run_dir).resolve())
    return header


def _latent_hdu(plane: CompressedPlane, index: int) -> fits.ImageHDU:
    hdu = fits.ImageHDU(plane.latent, name="LATENT", ver=index + 1)
    h = hdu.header
    h["SRCFILE"] = str(plane.source)
    h["SRCHDU"] = (int(plane.hdu), "source HDU index")
    h["SRCPLANE"] = (int(plane.plane), "plane of a cube (0 for 2-D images)")
    h["ORIGH"], h["ORIGW"] = int(plane.shape[0]), int(plane.shape[1])
    h["OFFSET"] = (plane.offset, "normalization offset (physical units)")
    h["SCALE"] = (plane.scale, "normalization scale (physical units per unit)")
    h["NFILLED"] = (plane.n_filled, "NaN/BLANK pixels filled with the background")
    h["ETA"] = (int(plane.latent.shape[0]), "latent channels kept for this plane")
    h["BITSPP"] = (plane.bits_per_pixel, "latent payload bits per pixel")
    return hdu


def read_container(path) -> tuple[fits.Header, list[CompressedPlane]]:
    """The primary header and planes of a ``.fae.fits`` container; clear error if it is not one."""
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
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
    except OSError as err:
        raise CodecError(f"{path}: cannot read as FITS: {err}") from err
    except KeyError as err:
        raise CodecError(f"{path}: container header lacks {err}") from err
    if len(planes) != header.get("NPLANES"):
        raise CodecError(f"{path}: has {len(planes)} LATENT HDUs, header says {header.get('NPLANES')}")
    return header, planes


def _load_model(run_dir, checkpoint):
    from fitsae.train.checkpoints import CheckpointError, load_model

    try:
        cfg, model, step = load_model(run_dir, checkpoint)
    except CheckpointError as err:
        raise CodecError(str(err)) from err
    except (OSError, ValueError, IndexError) as err:
        raise CodecError(f"{run_dir}: checkpoint {checkpoint!r} cannot restore the model: {err}") from err
    if model.model_config.kind not in ("dense", "conv"):
        raise CodecError(f"{run_dir}: the codec needs a tunable dense or conv model, not {model.model_config.kind!r}")
    return cfg, model, step


def compress_files(run_dir, inputs: list[str], eta: int, out, checkpoint="latest", select="best") -> list[dict]:
    """Compress every image plane of ``inputs`` (one container per input file).

    Parameters
    ----------
    run_dir : path
        Trained run whose model encodes.
    inputs : list of str
        FITS files, directories or globs (indexed like training data; unusable HDUs are reported).
    eta : int
        Budget of latent channels, 1..C.
    out : path
        A ``.fits`` file when there is exactly one input file, else a directory that receives
        ``<stem>.fae.fits`` per input.
    select : {"best", "fixed"}
        ``best``: each plane keeps the first η′ ≤ η channels that reconstruct it best
        (:mod:`fitsae.budget`); ``fixed``: exactly η.

    Returns
    -------
    list of dict
        Per container: path, planes, pixels, channels kept per plane, latent values, bits per
        pixel, file sizes.
    """
    from fitsae.data.manifest import index_paths

    cfg, model, step = _load_model(run_dir, checkpoint)
    channels = int(model.latent_channels)
    if not 1 <= int(eta) <= channels:
        raise CodecError(f"--eta {eta}: must be in 1..{channels} (the model's latent channels)")
    if select not in SELECTIONS:
        raise CodecError(f"select {select!r}: must be one of {', '.join(SELECTIONS)}")
    # edge=pad: compression takes images of any size, none is "too small for a tile".
    manifest, rejected = index_paths(list(inputs), replace(cfg.data, edge="pad"))
    if len(manifest) == 0:
        reasons = "; ".join(f"{r['path']} HDU {r['hdu']}: {r['reason']}" for r in rejected) or "no FITS files found"
        raise CodecError(f"nothing to compress in {', '.join(map(str, inputs))}: {reasons}")
    by_file: dict[str, list] = {}
    for row in manifest:
        by_file.setdefault(row.path, []).append(row)
    out = Path(out)
    single_file = len(by_file) == 1 and out.suffix.lower() in (".fits", ".fit", ".fts")
    (out.parent if single_file else out).mkdir(parents=True, exist_ok=True)
    summaries = []
    for source, rows in by_file.items():
        planes = [encode_plane(model, cfg.data, row, int(eta), select) for row in rows]
        target = out if single_file else out / f"{_stem(source)}.fae.fits"
        hdus = [fits.PrimaryHDU(header=_primary_header(cfg, model, run_dir, step, eta, select, len(planes)))]
        hdus += [_latent_hdu(p, i) for i, p in enumerate(planes)]
        fits.HDUList(hdus).writeto(target, overwrite=True)
        pixels = sum(p.shape[0] * p.shape[1] for p in planes)
        values = sum(p.latent.size for p in planes)
        summaries.append({
            "source": source, "container": str(target), "planes": len(planes), "pixels": pixels,
            "eta": int(eta), "eta_kept": [int(p.latent.shape[0]) for p in planes],
            "latent_values": values, "bits_per_pixel": 32.0 * values / pixels,
            "source_bytes": Path(source).stat().st_size, "container_bytes": target.stat().st_size,
        })
    return summaries + [{"rejected": r} for r in rejected]


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts", ".fz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def decompress_file(container, out, run_dir=None, checkpoint=None) -> dict:
    """Decode a container to a FITS file with ``MU`` and ``SIGMA`` image HDUs per plane.

    ``run_dir``/``checkpoint`` default to the run and step recorded in the container; the model's
    weight digest must match the one recorded at compression.
    """
    header, planes = read_container(container)
    run_dir = run_dir or header["RUNDIR"]
    checkpoint = checkpoint if checkpoint is not None else int(header["CKPTSTEP"])
    cfg, model, step = _load_model(run_dir, checkpoint)
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
