"""The error-bounded and lossless modes: fpack's guarantee, the autoencoder as probability model.

Each tile is quantized as fpack does (:mod:`fitsae.codec.quantize`: |x − x̂| ≤ Δ/2, zero-mean
error; integers bit-exact with ``lossless``). Its latents are coded as in the lossy mode, and
the integers k in passes (:mod:`fitsae.codec.context`), each pixel under a density whose mean
and width are the model's μ and σ, corrected by its decoded neighbours where the model missed
(:mod:`fitsae.codec.predict`, :mod:`fitsae.codec.residual`). η′ and, with ``family="best"``
(the default), the residual density are chosen per tile by the total coded bytes (latents +
residuals): here the error is fixed by Δ, only the size varies. Gaussian suits fields whose μ
is good (the noise is what is left), Laplace fields the model does not know (heavy tails); the
README has the measurements. Then, for the chosen η′, the widths may be moved up the width
table by ``WIDEN`` entries (×2^(1/3) each, one setting per tile, again by the bytes): where
the model's σ is too narrow (an image unlike its training data) this saves what a wrong width
costs, where it is right the setting stays 0. With ``--int-to-float`` an integer tile is coded
both with a dithered float step and with whole counts, and keeps the smaller.
NaN/BLANK pixels and, for float sources, exact zeros are restored exactly from their masks
(fpack's ZBLANK and SUBTRACTIVE_DITHER_2); their k is coded as the prediction's centre, which
costs next to nothing. A SHA-256 of the decoded pixels is stored per tile and verified: any
disagreement between encoder and decoder is an error naming the file and tile.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import NamedTuple

import numpy as np

from fitsae.budget import ladder
from fitsae.codec import context, residual
from fitsae.codec.encoder import BACKGROUND
from fitsae.codec.container import BoundedTile, Tile, pack_mask, unpack_mask
from fitsae.codec.errors import CodecError
from fitsae.codec.planes import normalized, pad, physical, plane_record, read_plane
from fitsae.codec.quantize import Quantization, TileFrame, dither
from fitsae.data.normalize import sigma_to_physical_first_order
from fitsae.entropy import CodingError

__all__ = ["FAMILY_CHOICES", "DEFAULT_CHOICE", "header_cards", "int_to_float", "mode_of", "encode_plane", "decode_tile",
           "pixel_checksum", "summary"]

FAMILY_CHOICES = residual.FAMILIES + ("best",)
DEFAULT_CHOICE = "best"
WIDEN = tuple(range(7))  # up to ×4
PATIENCE = 2  # η′ candidates in a row larger than the best before the search stops
_FLAT = np.dtype(">f4")


def header_cards(quant: Quantization, family: str) -> dict:
    """Primary-header cards recording the mode (decoding needs FAEMODE, DITHSEED, RESFAM)."""
    cards = {"FAEMODE": (quant.mode, "lossy, quantize, max-error or lossless"),
             "DITHSEED": (int(quant.seed), "dither seed (as fpack's ZDITHER0)"),
             "RESFAM": (family, "density around the mean (best: RFAM per tile)")}
    if quant.level is not None:
        cards["QLEVEL"] = (float(quant.level), "q: step = noise sigma / q")
    if quant.max_error is not None:
        cards["MAXERR"] = (float(quant.max_error), "E: step = 2 E (physical units)")
    if quant.noise is not None:
        cards["NOISE"] = (float(quant.noise), "noise sigma given for the step")
    if quant.int_to_float:
        cards["INT2FLT"] = (True, "integers quantized as float (fpack -i2f)")
    return cards


def int_to_float(header) -> bool:
    """Whether the container's integer planes were quantized as float (``--int-to-float``)."""
    return bool(header.get("INT2FLT", False))


def mode_of(header) -> str:
    """The container's mode: ``lossy`` (containers without FAEMODE) or a quantization mode."""
    return str(header.get("FAEMODE", "lossy"))


def pixel_checksum(values: np.ndarray) -> str:
    """SHA-256 of a tile's decoded pixels as float64 (NaN where masked)."""
    return hashlib.sha256(np.ascontiguousarray(values, np.float64).tobytes()).hexdigest()


def _tile_noise(pixels: np.ndarray, row) -> float:
    from fitsae.data.normalize import noise_estimate

    sigma, _ = noise_estimate(pixels, abs(float(row.bscale)) if row.bitpix > 0 else None)
    return sigma if sigma > 0 and math.isfinite(sigma) else float(row.noise)


def _physical_prediction(predictor, k_latent, plane, data_cfg, lo, hi, h, w) -> tuple[np.ndarray, np.ndarray]:
    """The model's per-pixel μ (clipped to [lo, hi]) and σ of a tile, physical units (float64)."""
    mu_norm, log_var = predictor(k_latent)
    mu_norm, log_var = mu_norm[:h, :w], log_var[:h, :w]
    mu = physical(mu_norm[None], plane.offset, plane.scale, data_cfg, [lo], [hi])[0]
    sigma = sigma_to_physical_first_order(np.exp(0.5 * np.asarray(log_var, np.float64)), mu_norm, float(plane.scale),
                                          data_cfg)
    return mu, sigma


def _flat_bytes(measured: np.ndarray, noise: float) -> bytes:
    """η′ = 0: the tile's median and noise σ (physical) as two big-endian float32, its whole model."""
    median = float(np.median(measured)) if measured.size else 0.0
    return np.array([median, noise], _FLAT).tobytes()


def _flat_prediction(data: bytes, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The constant μ and σ maps of an η′ = 0 tile, read back from its bytes as the decoder reads them."""
    if len(data) != 2 * _FLAT.itemsize:
        raise CodingError(f"an η′ = 0 tile holds {2 * _FLAT.itemsize} bytes (median, σ), not {len(data)}")
    median, sigma = (float(v) for v in np.frombuffer(data, _FLAT))
    return np.full((h, w), median), np.full((h, w), sigma)


def _on_grid(frame: TileFrame, mu: np.ndarray, sigma: np.ndarray) -> residual.Prediction:
    """The quantized prediction of a tile's integers in ``frame``."""
    return residual.predict(frame.to_grid(mu), sigma / frame.delta)


class _Choice(NamedTuple):
    """One candidate coding of a tile: its frame, η′ and its latents, the widening, the coded pixels."""

    frame: TileFrame
    kept: int
    k_latent: np.ndarray
    lat_data: bytes
    lat_esc: int
    prediction: residual.Prediction
    widen: int
    pixels: tuple  # context.encode's (family, bytes, escapes, parameters, integers coded)

    @property
    def size(self) -> int:
        return len(self.lat_data) + len(self.pixels[1])


def _best_coding(frame: TileFrame, k: np.ndarray, etas: list, model, families: tuple, special: np.ndarray) -> _Choice:
    """The smallest coding of integers ``k`` in ``frame`` over η′ in increasing order (η′ = 0: no
    latents, the tile's median and σ), stopping after ``PATIENCE`` candidates in a row larger than
    the best so far; then over the widening of that η′. ``model(η′)`` gives (η′, latent
    integers, coded latents, escapes, physical (μ, σ))."""
    best, worse = None, 0
    for kept in etas:
        kept, k_latent, lat_data, lat_esc, (mu, sigma) = model(kept)
        prediction = _on_grid(frame, mu, sigma)
        candidate = _Choice(frame, kept, k_latent, lat_data, lat_esc, prediction, 0,
                            context.encode(k, prediction, families, special))
        if best is None or candidate.size < best.size:
            best, worse = candidate, 0
        else:
            worse += 1
            if worse == PATIENCE:
                break
    for widen in WIDEN[1:]:
        candidate = best._replace(widen=widen, pixels=context.encode(k, best.prediction.widened(widen), families,
                                                                     special))
        if candidate.size < best.size:
            best = candidate
    return best


def _restore(frame: TileFrame, k: np.ndarray, bad: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    values = frame.restore(k)
    values[zeros] = 0.0
    values[bad] = np.nan
    return values


def encode_plane(codec, predictor, data_cfg, geometry, row, index: int, eta: int, select: str,
                 quant: Quantization, family: str = DEFAULT_CHOICE):
    """Quantize and code one plane; returns (Plane with tiles, stats for the summary).

    ``family``: a residual density of :data:`fitsae.codec.residual.FAMILIES` for every tile, or
    ``"best"``: each tile the one that codes it in fewer bytes (recorded in the tile).
    """
    src = read_plane(row)
    pixels = src.pixels
    bad, _, offset, scale, x = normalized(row, pixels, data_cfg)
    plane = plane_record(row, src, offset, scale, bad.sum())
    zeros_all = (pixels == 0.0) & ~bad if row.bitpix < 0 else np.zeros_like(bad)
    etas = [int(eta)] if select == "fixed" else sorted({k for k in ladder(codec.channels) if k <= eta} | {int(eta)})
    if family not in FAMILY_CHOICES:
        raise CodecError(f"residual density {family!r}: expected one of {', '.join(FAMILY_CHOICES)}")
    families = residual.FAMILIES if family == "best" else (family,)
    stats = {"squared_error": 0.0, "measured": 0, "noise": float(row.noise), "worst_over_delta": 0.0,
             "error_sum": 0.0, "deltas": []}
    for y0, x0, h, w in geometry.origins(row.height, row.width):
        cut = (slice(y0, y0 + h), slice(x0, x0 + w))
        tile_bad, zeros = bad[cut], zeros_all[cut]
        values = pixels[cut]
        measured = values[~tile_bad]
        lo, hi = (float(measured.min()), float(measured.max())) if measured.size else (float(row.median),) * 2
        where = f"{row.path}, HDU {row.hdu}, plane {row.plane}, tile at ({y0}, {x0})"
        raw = None if src.raw is None else src.raw[cut]
        special = tile_bad | zeros
        z = codec.latents(pad(x[cut], geometry.padded(h, w))[None])
        flat = _flat_bytes(measured, _tile_noise(values, row))

        @functools.lru_cache(maxsize=None)  # a float64 decode per η′ is most of the encoder's time
        def model(kept, z=z, flat=flat, lo=lo, hi=hi, h=h, w=w):
            if kept == BACKGROUND:
                return kept, None, flat, 0, _flat_prediction(flat, h, w)
            k_latent = codec.tables.symbols(z[..., :kept])[0]
            return (kept, k_latent, *codec.code(k_latent, kept),
                    _physical_prediction(predictor, k_latent, plane, data_cfg, lo, hi, h, w))

        candidates = etas if select == "fixed" else [BACKGROUND] + etas
        best = None
        for frame in quant.frames(where, row.bitpix, row.bzero, row.bscale, _tile_noise(values, row), index, y0, x0,
                                  (h, w)):
            choice = _best_coding(frame, frame.quantize(np.where(tile_bad, row.median, values), raw), candidates,
                                  model, families, special)
            if best is None or choice.size < best.size:
                best = choice
        frame, kept, k_latent, lat_data, lat_esc, _, widen, (fam, res_data, res_esc, ctx, coded) = best
        decoded = _restore(frame, coded.reshape(h, w), tile_bad, zeros)
        bounded = BoundedTile(frame.delta, frame.zero, frame.units, res_esc, res_data, pixel_checksum(decoded),
                              pack_mask(zeros), fam if family == "best" else "", widen, ctx)
        bits = 8.0 * len(flat) if kept == BACKGROUND else codec.tables.ideal_bits(k_latent)
        plane.tiles.append(Tile(y0, x0, h, w, kept, lat_esc, lo, hi, bits, "",
                                lat_data, pack_mask(tile_bad), bounded))
        error = (decoded - values)[~tile_bad]
        stats["squared_error"] += float(np.sum(error ** 2))
        stats["error_sum"] += float(np.sum(error))
        stats["measured"] += int(error.size)
        stats["deltas"].append(frame.delta)
        if error.size:
            stats["worst_over_delta"] = max(stats["worst_over_delta"], float(np.max(np.abs(error))) / frame.delta)
    return plane, stats


def decode_tile(codec, predictor, data_cfg, geometry, plane, tile, index: int, seed: int, family: str,
                where: str, sigma: bool):
    """One tile's pixels (physical float64, NaN where masked), σ map or None, and NaN/BLANK mask.

    The σ map is the RMS error of the decoded pixels (:meth:`TileFrame.rms_error`; 0 at exact
    zeros), which is what ``--sigma`` promises: the model's σ only shaped the coding.

    Raises :class:`CodecError` naming ``where`` and the tile when the bytes do not decode or
    the decoded pixels fail their checksum.
    """
    b = tile.bounded
    name = f"{where}, plane {index + 1}, tile at ({tile.y0}, {tile.x0})"
    if b is None:
        raise CodecError(f"{name}: the container's mode needs coded pixels, this tile has none")
    if tile.eta < 0 or tile.eta > codec.channels:
        raise CodecError(f"{name}: η′={tile.eta} outside 0..{codec.channels}")
    h, w = tile.h, tile.w
    integer = b.units > 0  # integer steps; 0: a float step with dither (float sources, --int-to-float)
    u = np.zeros((h, w)) if integer else dither(seed, index, tile.y0, tile.x0, (h, w))
    frame = TileFrame(b.delta, b.zero, u, integer, b.units)
    try:
        if tile.eta == BACKGROUND:
            mu, sig = _flat_prediction(tile.data, h, w)
        else:
            k_latent = codec.uncode(tile.data, tile.escapes, codec.latent_grid(*geometry.padded(h, w)), tile.eta)[0]
            mu, sig = _physical_prediction(predictor, k_latent, plane, data_cfg, tile.lo, tile.hi, h, w)
        prediction = _on_grid(frame, mu, sig)
        if b.context:
            k = context.decode(b.data, b.escapes, prediction.widened(b.widen), b.family or family, b.context, (h, w))
        else:  # written before the interlaced context: one pass under the model alone
            k = residual.decode(b.data, b.escapes, prediction.widened(b.widen), b.family or family)
    except CodingError as err:
        raise CodecError(f"{name}: {err}") from err
    bad, zeros = unpack_mask(tile.mask, (h, w)), unpack_mask(b.zeros, (h, w))
    values = _restore(frame, k.reshape(h, w), bad, zeros)
    if pixel_checksum(values) != b.checksum:
        raise CodecError(f"{name}: the decoded pixels fail their checksum (the coded bytes were altered, or "
                         "this machine computes the model's prediction differently)")
    # The σ of what decodes, not of the model's prediction: the pixels are the original's to Δ/2.
    error = np.where(zeros, 0.0, frame.rms_error())
    return values, (np.where(bad, np.nan, error) if sigma else None), bad


def summary(stats: list[dict]) -> dict:
    """Per-file figures of the error-bounded modes: the worst |x − x̂|/Δ, mean error, median Δ."""
    n = sum(s["measured"] for s in stats)
    deltas = [d for s in stats for d in s["deltas"]]
    return {"mode_worst_over_delta": max((s["worst_over_delta"] for s in stats), default=0.0),
            "mean_error": sum(s["error_sum"] for s in stats) / n if n else math.nan,
            "median_delta": float(np.median(deltas)) if deltas else math.nan}
