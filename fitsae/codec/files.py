"""``compress_files`` and ``decompress_file``: FITS images ⇄ ``.fae.fits`` containers.

Each image plane is cut into tiles (``tile``×``tile``, 256 by default; a dense model's own image
size), each tile padded to a shape the model takes (mirrored, so the border adds no edges to
spend bits on), encoded within the budget by :class:`~fitsae.codec.encoder.TileCodec` and
coded with the frozen model's tables. A tile is decoded alone, exactly as the encoder re-decoded
it for the checksum, so a section decodes without the rest. The decoded file mirrors the input:
the same HDUs with the source headers (WCS and all), NaN/BLANK pixels where they were, and the
source's BITPIX/BZERO/BSCALE when the input was integer (values clipped to its range).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

from fitsae.codec import artifact, bounded
from fitsae.codec.container import FORMAT, FORMAT_V1, Plane, Tile, pack_mask, read_container, unpack_mask, \
    write_container
from fitsae.codec.encoder import BACKGROUND, TileCodec, background_value, mu_checksum
from fitsae.entropy import CodingError
from fitsae.codec.errors import CodecError
from fitsae.codec.refine import refiner_for, refusal
from fitsae.codec.planes import Geometry, normalized, pad, physical, plane_record, read_plane, \
    stored_hdu
from fitsae.data.normalize import decoded_sigma

__all__ = ["SELECTIONS", "DEFAULT_TILE", "compress_files", "decompress_file", "parse_section", "container_format"]

log = logging.getLogger("fitsae")

SELECTIONS = ("best", "fixed")
DEFAULT_TILE = 256
_SUFFIXES = (".fits.gz", ".fit.gz", ".fts.gz", ".fits", ".fit", ".fts", ".fz")


def _stem(path) -> str:
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _tile_mu(codec: TileCodec, k: np.ndarray, data: bytes, offset, scale, data_cfg, lo, hi, shape) -> np.ndarray:
    """One tile's physical μ (padded ``shape``) as decompress computes it, from its integers
    ``k`` (1, …, η′) and coded bytes: an η′ = 0 tile is its stored median everywhere."""
    if k.shape[-1] == BACKGROUND:
        return np.clip(np.full(shape, background_value(data)), lo, hi)
    return physical(codec.mean(k), offset, scale, data_cfg, [lo], [hi])[0]


def _encode_plane(codec: TileCodec, data_cfg, geometry: Geometry, row, eta: int, select: str) -> tuple[Plane, dict]:
    src = read_plane(row)
    pixels = src.pixels
    bad, filled, offset, scale, x = normalized(row, pixels, data_cfg)
    plane = plane_record(row, src, offset, scale, bad.sum())
    groups: dict[tuple, list] = {}
    for y0, x0, h, w in geometry.origins(row.height, row.width):
        groups.setdefault(geometry.padded(h, w), []).append((y0, x0, h, w))
    squared, counted = 0.0, 0
    for shape, origins in groups.items():
        xs, targets, weights, los, his = [], [], [], [], []
        for y0, x0, h, w in origins:
            cut = (slice(y0, y0 + h), slice(x0, x0 + w))
            measured = ~bad[cut]
            values = pixels[cut][measured]
            lo, hi = (float(values.min()), float(values.max())) if values.size else (float(row.median),) * 2
            xs.append(pad(x[cut], shape))
            targets.append(pad(filled[cut], shape))
            weight = np.zeros(shape, bool)
            weight[:h, :w] = measured
            weights.append(weight)
            los.append(lo)
            his.append(hi)
        los, his = np.array(los), np.array(his)
        chosen, plain = codec.choose(np.stack(xs), np.stack(targets),
                                     lambda mu: physical(mu, offset, scale, data_cfg, los, his), [eta],
                                     np.stack(weights))
        result = (chosen if select == "best" else plain)[eta]
        for i, (y0, x0, h, w) in enumerate(origins):
            kept = int(result.eta[i])
            k = result.symbols[i][..., :kept]
            data, escapes = codec.code(k, kept, result.background[i])
            # Re-decoded alone, exactly as decompress will: the checksum is of what it will see.
            mu = _tile_mu(codec, k[None], data, offset, scale, data_cfg, los[i], his[i], shape)[:h, :w]
            mu32 = mu.astype(np.float32)
            measured = ~bad[y0:y0 + h, x0:x0 + w]
            squared += float(np.sum((pixels[y0:y0 + h, x0:x0 + w][measured] - mu32[measured]) ** 2))
            counted += int(measured.sum())
            plane.tiles.append(Tile(y0, x0, h, w, kept, escapes, float(los[i]), float(his[i]),
                                    codec.estimated_bits(k), mu_checksum(mu32), data,
                                    pack_mask(bad[y0:y0 + h, x0:x0 + w])))
    plane.tiles.sort(key=lambda t: (t.y0, t.x0))
    stats = {"squared_error": squared, "measured": counted, "noise": float(row.noise)}
    return plane, stats


def _primary(frozen, eta: int, select: str, geometry: Geometry, refine: int) -> fits.Header:
    header = fits.Header()
    header["MODDIG"] = frozen.digest  # SHA-256 of the frozen model (weights and tables)
    header["CKPTSTEP"] = (int(frozen.step), "checkpoint step the model was frozen from")
    header["ETA"] = (int(eta), "budget: most latent channels a tile keeps")
    header["ETASEL"] = (select, "best: each tile keeps its best eta' <= ETA")
    header["REFINE"] = (int(refine), "latent refinement steps per tile (0: none)")
    header["LATCH"] = (int(frozen.model.latent_channels), "latent channels C of the model")
    header["TILEH"], header["TILEW"] = (int(v) for v in geometry.tile)
    header["NORM"] = (frozen.cfg.data.normalization, "data.normalization")
    header["ASINHA"] = (float(frozen.cfg.data.asinh_softening), "data.asinh_softening")
    header["TABLES"] = (frozen.tables.source, "prior: learned; fitted: at freezing")
    header["RUNDIR"] = str(frozen.run_dir)
    return header


def compress_files(run_dir, inputs: list[str], eta: int, out, checkpoint="latest", select="best",
                   tile: int = DEFAULT_TILE, quantization=None, family: str = "best",
                   refine: int = 0) -> list[dict]:
    """Compress every image plane of ``inputs`` (one container per input file).

    Parameters
    ----------
    run_dir : path
        Trained run whose model encodes; its checkpoint is frozen into ``RUN/models/`` first
        (:func:`fitsae.codec.artifact.freeze`), and the container names that frozen model.
    inputs : list of str
        FITS files, directories or globs (indexed like training data; unusable HDUs are reported).
    eta : int
        Budget of latent channels, 1..C.
    out : path
        A ``.fits`` file when there is exactly one input file, else a directory that receives
        ``<stem>.fae.fits`` per input (two inputs with the same stem are refused).
    select : {"best", "fixed"}
        ``best``: each tile keeps the first η′ ≤ η channels that reconstruct it best
        (:mod:`fitsae.budget`); ``fixed``: the plain mask, exactly η.
    tile : int
        Side of the square tiles a plane is cut into (conv models; a multiple of the stride).
    quantization : fitsae.codec.quantize.Quantization, optional
        An error-bounded or lossless mode (:mod:`fitsae.codec.bounded`): the pixels themselves
        are coded, each within Δ/2 (bit-exact for ``lossless``); default the lossy mode (μ only).
    family : {"best", "laplace", "gaussian"}
        Density of the pixels around the model's mean in those modes.
    refine : int
        Adam steps per tile on the budget's latents (:mod:`fitsae.codec.refine`; models trained
        for rate only); 0, the default, codes the encoder's latents as they are.

    Returns
    -------
    list of dict
        Per container: source, container, planes, pixels, channels kept per tile, payload and
        file bits per pixel, RMSE/σ_noise achieved, sizes and whether the file grew; then one
        ``{"rejected": ...}`` per unusable input HDU. Under ``mpirun``/``srun`` the input files
        are shared among the ranks (:func:`fitsae.distributed.my_share`), each rank writing its
        own containers; rank 0 returns every summary in input order, the other ranks [].
    """
    from dataclasses import replace

    from fitsae.data.manifest import index_paths

    from fitsae import distributed

    if select not in SELECTIONS:
        raise CodecError(f"select {select!r}: must be one of {', '.join(SELECTIONS)}")
    if refine:
        from fitsae import config as fconfig
        from fitsae.train.config import ExperimentConfig

        problem = refusal(fconfig.load(ExperimentConfig, Path(run_dir) / "params.yaml").model)
        if problem:
            raise CodecError(f"{run_dir}: {problem}")
    comm = distributed.comm()
    # Rank 0 freezes (tables may be fitted, minutes), the others load what it wrote.
    frozen = artifact.load_frozen(comm.bcast(artifact.freeze(run_dir, checkpoint) if distributed.is_root() else None))
    channels = int(frozen.model.latent_channels)
    if not 1 <= int(eta) <= channels:
        raise CodecError(f"--eta {eta}: must be in 1..{channels} (the model's latent channels)")
    geometry = Geometry.of(frozen.model, int(tile))
    # edge=pad: compression takes images of any size, none is "too small for a tile".
    manifest, rejected = index_paths(list(inputs), replace(frozen.cfg.data, edge="pad"),
                                     comm if comm.Get_size() > 1 else None)
    if len(manifest) == 0:
        reasons = "; ".join(f"{r['path']} HDU {r['hdu']}: {r['reason']}" for r in rejected) or "no FITS files found"
        raise CodecError(f"nothing to compress in {', '.join(map(str, inputs))}: {reasons}")
    by_file: dict[str, list] = {}
    for row in manifest:
        by_file.setdefault(row.path, []).append(row)
    out = Path(out)
    single_file = len(by_file) == 1 and out.suffix.lower() in (".fits", ".fit", ".fts")
    targets = {source: out if single_file else out / f"{_stem(source)}.fae.fits" for source in by_file}
    clash: dict[Path, list] = {}
    for source, target in targets.items():
        clash.setdefault(target, []).append(source)
    clashes = [sources for sources in clash.values() if len(sources) > 1]
    if clashes:
        raise CodecError(f"inputs {' and '.join(clashes[0])} would both be written to {targets[clashes[0][0]]}; "
                         "compress them into separate --out directories")
    try:
        (out.parent if single_file else out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CodecError(f"{out}: cannot create the output directory: {err.strerror or err}") from err
    try:
        refiner = refiner_for(frozen.model, frozen.cfg.data, refine)
    except ValueError as err:
        raise CodecError(f"{run_dir}: {err}") from err
    codec = TileCodec(frozen.model, frozen.tables, refiner)
    predictor = None
    if quantization is not None:
        from fitsae.codec.predict import Predictor

        predictor = Predictor(frozen)
    summaries = []
    for source in distributed.my_share(by_file):
        rows = by_file[source]
        if quantization is None:
            encoded = [_encode_plane(codec, frozen.cfg.data, geometry, row, int(eta), select) for row in rows]
        else:
            encoded = [bounded.encode_plane(codec, predictor, frozen.cfg.data, geometry, row, i, int(eta), select,
                                            quantization, family) for i, row in enumerate(rows)]
        planes = [p for p, _ in encoded]
        target = targets[source]
        try:
            primary = _primary(frozen, eta, select, geometry, refine)
            if quantization is not None:
                primary.update(bounded.header_cards(quantization, family))
            size = write_container(target, primary, planes)
        except OSError as err:
            raise CodecError(f"{target}: cannot write the container: {err.strerror or err}") from err
        pixels = sum(p.shape[0] * p.shape[1] for p in planes)
        payload = sum(p.payload_bytes for p in planes)
        msq = [s["squared_error"] / s["measured"] / s["noise"] ** 2 for _, s in encoded if s["measured"]]
        source_bytes = Path(source).stat().st_size
        summaries.append({
            "source": source, "container": str(target), "planes": len(planes), "pixels": pixels,
            "eta": int(eta), "eta_kept": [t.eta for p in planes for t in p.tiles],
            "payload_bytes": payload, "bits_per_pixel": 8.0 * payload / pixels,
            "bits_per_pixel_file": 8.0 * size / pixels,
            "rmse_over_noise": math.sqrt(float(np.mean(msq))) if msq else math.nan,
            "source_bytes": source_bytes, "container_bytes": size, "grew": size > source_bytes,
            "model": str(frozen.path),
        })
        if quantization is not None:
            summaries[-1].update(bounded.summary([s for _, s in encoded]))
    summaries = distributed.gather_shares(summaries)
    return summaries + [{"rejected": r} for r in rejected] if distributed.is_root() else []


# --- decoding --------------------------------------------------------------------------------


def parse_section(text: str | None) -> tuple | None:
    """``"y0:y1,x0:x1"`` (0-based, end exclusive, like numpy) → ((y0, y1), (x0, x1))."""
    if not text:
        return None
    try:
        rows, cols = text.split(",")
        out = tuple(tuple(int(v) for v in part.split(":")) for part in (rows, cols))
        if any(len(p) != 2 or p[0] < 0 or p[1] <= p[0] for p in out):
            raise ValueError
    except ValueError:
        raise CodecError(f"--section {text!r}: expected y0:y1,x0:x1 with 0 <= y0 < y1 and 0 <= x0 < x1") from None
    return out


def container_format(path) -> str | None:
    """``FAEFMT`` of a file's primary header (None if it has none); CodecError if not FITS at all."""
    try:
        return fits.getheader(path, 0).get("FAEFMT")
    except Exception as err:
        raise CodecError(f"{path}: cannot read as FITS: {err}") from err


def _find_model(container, header, model_path) -> Path:
    digest = header.get("MODDIG")
    run_dir = header.get("RUNDIR")
    search = [model_path, os.environ.get("FITSAE_MODELS"), Path(run_dir) / artifact.MODELS_DIR if run_dir else None]
    found = artifact.find_frozen(digest, search)
    if found is None:
        looked = ", ".join(str(s) for s in search if s)
        raise CodecError(
            f"{container}: needs the frozen model {str(digest)[:16]}… (from run {run_dir}, checkpoint step "
            f"{header.get('CKPTSTEP')}), not found in {looked or 'any models directory'}; pass --model with its "
            f"folder (copy RUN/{artifact.MODELS_DIR}/{str(digest)[:16]} along with the files it decodes), or, if that "
            "run's checkpoint still exists, compress again"
        )
    return found


def _decode_tile(codec: TileCodec, data_cfg, geometry: Geometry, plane: Plane, tile: Tile, container,
                 index: int, sigma: bool):
    shape = geometry.padded(tile.h, tile.w)
    where = f"{container}, plane {index + 1}, tile at ({tile.y0}, {tile.x0})"
    if tile.eta < BACKGROUND or tile.eta > codec.channels:
        raise CodecError(f"{where}: η′={tile.eta} outside {BACKGROUND}..{codec.channels}")
    try:
        k = codec.uncode(tile.data, tile.escapes, codec.latent_grid(*shape), tile.eta)
        mu = _tile_mu(codec, k, tile.data, plane.offset, plane.scale, data_cfg, tile.lo, tile.hi, shape)
    except (CodingError, ValueError) as err:
        raise CodecError(f"{where}: {err}") from err
    mu = mu[:tile.h, :tile.w]
    mu32 = mu.astype(np.float32)
    matches = mu_checksum(mu32) == tile.mu_checksum
    sig = None
    if sigma:
        log_var = codec.log_variance(k)[0, :tile.h, :tile.w].astype(np.float64)
        # At the μ written (clipped, background tiles included), not at the model's unclipped μ:
        # the SIGMA plane describes the decoded pixels.
        sig = decoded_sigma(np.exp(0.5 * log_var), mu, plane.offset, plane.scale, tile.lo, tile.hi, data_cfg)
    mask = unpack_mask(tile.mask, (tile.h, tile.w))
    return mu32, sig, mask, matches


def decompress_file(container, out, model=None, section=None, sigma: bool = False, run_dir=None,
                    checkpoint=None) -> dict:
    """Decode a container to a FITS file shaped like its source (or a section of it).

    Parameters
    ----------
    container, out : path
    model : path, optional
        A frozen model folder, or a folder of them (``RUN/models``); by default the container's
        ``$FITSAE_MODELS`` and the recorded run's ``models/`` are searched by digest.
    section : ((y0, y1), (x0, x1)), optional
        Decode only this part of every plane (only the tiles it touches are decoded).
    sigma : bool
        Add a ``SIGMA`` image HDU (predicted 1σ, physical units) per decoded HDU.
    run_dir, checkpoint :
        Version-1 containers only (decoded by :mod:`fitsae.codec.legacy`).
    """
    fmt = container_format(container)
    if fmt == FORMAT_V1:
        from fitsae.codec import legacy

        return legacy.decompress_file(container, out, run_dir, checkpoint)
    if fmt != FORMAT:
        raise CodecError(f"{container}: not a fitsae container (FAEFMT={fmt!r}, expected {FORMAT!r})")
    header, planes = read_container(container)
    frozen = artifact.load_frozen(_find_model(container, header, model))
    if frozen.digest != header["MODDIG"]:
        raise CodecError(f"{container}: was compressed by model {header['MODDIG'][:16]}…, {frozen.path} is "
                         f"{frozen.digest[:16]}…")
    codec = TileCodec(frozen.model, frozen.tables)
    geometry = Geometry.of(frozen.model, int(header["TILEH"]))
    mismatched = []
    mode = bounded.mode_of(header)
    predictor = None
    if mode != "lossy":
        from fitsae.codec.predict import Predictor

        predictor = Predictor(frozen)
    decoded = []
    for i, plane in enumerate(planes):
        (y0, y1), (x0, x1) = section or ((0, plane.shape[0]), (0, plane.shape[1]))
        if y1 > plane.shape[0] or x1 > plane.shape[1]:
            raise CodecError(f"--section {y0}:{y1},{x0}:{x1} outside plane {i + 1} of {container} "
                             f"({plane.shape[0]}×{plane.shape[1]})")
        mu = np.zeros((y1 - y0, x1 - x0), np.float32)
        sig = np.zeros_like(mu) if sigma else None
        mask = np.zeros(mu.shape, bool)
        for tile in plane.tiles:
            if tile.y0 >= y1 or tile.y0 + tile.h <= y0 or tile.x0 >= x1 or tile.x0 + tile.w <= x0:
                continue
            if predictor is None:
                t_mu, t_sig, t_mask, matches = _decode_tile(codec, frozen.cfg.data, geometry, plane, tile, container,
                                                            i, sigma)
            else:
                t_mu, t_sig, t_mask = bounded.decode_tile(codec, predictor, frozen.cfg.data, geometry, plane, tile, i,
                                                          int(header["DITHSEED"]), str(header["RESFAM"]),
                                                          str(container), sigma)
                matches = True
            if not matches:
                mismatched.append(f"plane {i + 1} tile ({tile.y0}, {tile.x0})")
            sy = slice(max(y0, tile.y0), min(y1, tile.y0 + tile.h))
            sx = slice(max(x0, tile.x0), min(x1, tile.x0 + tile.w))
            src = (slice(sy.start - tile.y0, sy.stop - tile.y0), slice(sx.start - tile.x0, sx.stop - tile.x0))
            dst = (slice(sy.start - y0, sy.stop - y0), slice(sx.start - x0, sx.stop - x0))
            mu[dst], mask[dst] = t_mu[src], t_mask[src]
            if sigma:
                sig[dst] = t_sig[src]
        if bounded.int_to_float(header) and plane.bitpix > 0:  # fpack -i2f: dithered values, written as float32
            plane = dataclasses.replace(plane, bitpix=-32, bzero=0.0, bscale=1.0, blank=None)
        decoded.append((plane, mu, sig, mask))
    if mismatched:
        log.warning("%s: decoded μ differs from what the encoder computed in %d tile(s) (%s): TensorFlow's float "
                    "arithmetic differs between the two runs (threads, CPU). The stored checksum cannot say by how "
                    "much; such differences are of the order of float32 rounding, harmless in this lossy mode "
                    "(the error-bounded modes, --quantize-level/--max-error/--lossless, decode exactly)", container, len(mismatched), ", ".join(mismatched[:5]))
    hdus = _output_hdus(decoded, section, sigma)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        fits.HDUList(hdus).writeto(partial, overwrite=True)
        partial.replace(out)
    except OSError as err:
        raise CodecError(f"{out}: cannot write the decoded file: {err.strerror or err}") from err
    pixels = sum(p.shape[0] * p.shape[1] for p in planes)
    payload = sum(p.payload_bytes for p in planes)
    return {"container": str(container), "out": str(out), "planes": len(planes), "model": str(frozen.path),
            "bits_per_pixel": 8.0 * payload / pixels if pixels else math.nan, "checksum_mismatches": len(mismatched)}


def _output_hdus(decoded: list, section, sigma: bool) -> list:
    """Reassemble planes into the source's HDUs (cubes restacked), in source HDU order."""
    by_hdu: dict[int, list] = {}
    for item in decoded:
        by_hdu.setdefault(item[0].hdu, []).append(item)
    hdus = []
    for hdu_index in sorted(by_hdu):
        items = sorted(by_hdu[hdu_index], key=lambda it: it[0].plane)
        plane = items[0][0]
        header = plane.header.copy()
        if section is not None:
            (y0, _), (x0, _) = section
            for key, shift in (("CRPIX1", x0), ("CRPIX2", y0)):
                if key in header:
                    header[key] = header[key] - shift
        if plane.naxis == 3:
            values = np.stack([it[1] for it in items])
            mask = np.stack([it[3] for it in items])
        else:
            values, mask = items[0][1], items[0][3]
        hdu, _ = stored_hdu(values, mask, plane, header, primary=hdu_index == 0)
        if plane.extname:
            hdu.header["EXTNAME"] = plane.extname
        if plane.extver is not None:
            hdu.header["EXTVER"] = plane.extver
        hdus.append(hdu)
        if sigma:
            sig = np.stack([it[2] for it in items]) if plane.naxis == 3 else items[0][2]
            hdus.append(fits.ImageHDU(np.where(mask, np.nan, sig).astype(np.float32), name="SIGMA",
                                      ver=len([h for h in hdus if h.name == "SIGMA"]) + 1))
    return hdus if min(by_hdu) == 0 else [fits.PrimaryHDU()] + hdus
